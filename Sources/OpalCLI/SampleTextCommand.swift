import ArgumentParser
import Foundation
import Opal

/// `opal sample lstm|gru|rnn|gpt`: text from a character language model written by `opal train lstm|gru|rnn|gpt`.
struct SampleTextOptions: ParsableArguments {
    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "The checkpoint written by `opal train lstm|gru|rnn|gpt`.")
    var checkpoint: String

    @Option(help: "Text the sample starts from (every character must be in the model's vocabulary).")
    var prompt = "ROMEO:"

    @Option(help: "Characters to generate after the prompt.")
    var length = 400

    @Option(help: "Sampling temperature (0: always the most likely character).")
    var temperature: Float = 0.8

    @Option(help: "Seed of the sampling.")
    var seed: UInt64 = 1

    func validate() throws {
        guard !prompt.isEmpty else { throw ValidationError("--prompt must not be empty") }
        guard length >= 0, length <= 1_000_000 else { throw ValidationError("--length must lie in 0…1000000, got \(length)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0, got \(temperature)") }
    }

    func run(cell: RecurrentCellKind) throws {
        let device = try deviceOptions.resolve()
        let (model, vocabulary, metadata) = try CharLanguageModel.load(from: URL(fileURLWithPath: checkpoint))
        guard model.cellKind == cell else {
            throw ValidationError("\(checkpoint) holds a \(model.cellKind.rawValue) language model, not a \(cell.rawValue): use `opal sample \(model.cellKind.rawValue)`")
        }
        let text = try model.sample(vocabulary: vocabulary, name: "\(checkpoint) (trained on \(metadata["opal.text"] ?? "unknown text"))",
                                    prompt: prompt, length: length, temperature: temperature, seed: seed, on: device)
        print(prompt + text)
    }
}

struct SampleLSTMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lstm", abstract: "Generate text from an LSTM language model checkpoint.")
    @OptionGroup var options: SampleTextOptions
    func run() throws { try options.run(cell: .lstm) }
}

struct SampleGRUCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gru", abstract: "Generate text from a GRU language model checkpoint.")
    @OptionGroup var options: SampleTextOptions
    func run() throws { try options.run(cell: .gru) }
}

struct SampleRNNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rnn", abstract: "Generate text from an RNN language model checkpoint.")
    @OptionGroup var options: SampleTextOptions
    func run() throws { try options.run(cell: .rnn) }
}

/// `opal sample`: images from a GAN or VAE (`SampleCommand`, which reads the family as an argument)
/// and text from a language model (`lstm`, `gru`, `rnn`).
///
/// `SampleCommand` takes the family as a positional argument, and a command with a positional
/// argument cannot also have subcommands, so this group sits in front of it: `gan` and `vae` hand
/// their arguments on to `SampleCommand` unchanged (its help and errors included).
struct SampleGroupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample", abstract: "Generate samples: a PNG grid from a GAN or VAE checkpoint, or text from a language model.",
        subcommands: [SampleImagesCommand<GANFamily>.self, SampleImagesCommand<VAEFamily>.self,
                      SampleLSTMCommand.self, SampleGRUCommand.self, SampleRNNCommand.self, SampleGPTCommand.self])
}

protocol ImageFamily { static var name: String { get } }
enum GANFamily: ImageFamily { static let name = "gan" }
enum VAEFamily: ImageFamily { static let name = "vae" }

/// `opal sample gan|vae …`: runs `SampleCommand` with the same arguments.
struct SampleImagesCommand<Family: ImageFamily>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: Family.name,
                             abstract: "A PNG grid of samples from a trained \(Family.name.uppercased()) (see `opal sample \(Family.name) --help`).",
                             helpNames: [])
    }

    @Argument(parsing: .captureForPassthrough, help: "The options of `opal sample \(Family.name)`: --checkpoint FILE [--out grid.png] [--count 64] [--seed 1] [--device D].")
    var arguments: [String] = []

    func run() throws {
        var command = try SampleCommand.parseAsRoot([Family.name] + arguments)
        try command.run()
    }
}
