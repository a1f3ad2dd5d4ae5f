import ArgumentParser
import Foundation
import Opal
import OpalBenchmarks

/// `opal bench train …`: reference training steps, per device, beside PyTorch on the CPU.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Time reference training steps (forward + backward + optimizer).",
        subcommands: [BenchTrainMLPCommand.self, BenchTrainCNNCommand.self, BenchTrainAutoencoderCommand.self,
                      BenchTrainGANCommand.self, BenchTrainLSTMCommand.self, BenchTrainGPTCommand.self])
}

/// Options shared by the `opal bench train` commands.
struct BenchTrainOptions: ParsableArguments {
    @Option(name: .long, help: "Device to time (auto, gpu, cpu, opencl:N); default: every device.")
    var device: String?

    @Option(help: "Timed steps per device (after warm-up); the median is reported. Default: R1 20; otherwise as many as fit in about 10 s per device, within the workload's limits.")
    var runs: Int?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Threads for the PyTorch CPU reference (default: the processor count).")
    var threads: Int?

    @Flag(name: .customLong("no-pytorch"), help: "Skip the PyTorch reference.")
    var noPyTorch = false

    @Flag(help: "On OpenCL devices, also print the device time per kernel of one step (from profiling events).")
    var profile = false

    @Option(help: "Rounds that alternate Opal's native-CPU step and PyTorch's (a shared machine's speed drifts over seconds): the CPU ratio is the median of the rounds' ratios.")
    var rounds = 1

    func validate() throws {
        if let device { do { _ = try DeviceRequest(parsing: device) } catch { throw ValidationError("\(error)") } }
        if let runs, runs <= 0 { throw ValidationError("--runs must be positive, got \(runs)") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive, got \(threads)") }
        if rounds <= 0 { throw ValidationError("--rounds must be positive, got \(rounds)") }
    }
}

/// `opal bench train mlp`: R1 on every device (or the chosen one), beside PyTorch CPU.
struct BenchTrainMLPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mlp",
        abstract: "R1: MLP 784-512-512-10 step (batch 128, Adam), data on the device, per device and against PyTorch.")

    @OptionGroup var options: BenchTrainOptions

    func run() throws {
        // As before the other workloads existed: 20 steps unless told, never fewer than 10.
        try TrainingStepReport(workload: .mlp, options: options, runs: max(options.runs ?? 20, 10)).run()
    }
}

/// `opal bench train cnn`: R2.
struct BenchTrainCNNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cnn",
        abstract: "R2: CNN.simple() step (batch 64, cross-entropy, Adam), data on the device, per device and against PyTorch.")

    @OptionGroup var options: BenchTrainOptions

    func run() throws { try TrainingStepReport(workload: .cnn, options: options, runs: options.runs).run() }
}

/// `opal bench train autoencoder`: R4.
struct BenchTrainAutoencoderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "autoencoder",
        abstract: "R4: dense autoencoder 784-256-32-256-784 step (batch 128, MSE, Adam), per device and against PyTorch.")

    @OptionGroup var options: BenchTrainOptions

    func run() throws { try TrainingStepReport(workload: .autoencoder, options: options, runs: options.runs).run() }
}

/// `opal bench train gan`: R5.
struct BenchTrainGANCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gan",
        abstract: "R5: DCGAN-small step, one D + one G update (batch 64, Adam 2e-4 β1 0.5), per device and against PyTorch.")

    @OptionGroup var options: BenchTrainOptions

    func run() throws { try TrainingStepReport(workload: .gan, options: options, runs: options.runs).run() }
}

/// `opal bench train gpt`: R6.
struct BenchTrainGPTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpt",
        abstract: "R6: GPT character model step (vocab 65, context 64, d_model 128, 4 heads, 2 blocks, batch 32, Adam), per device and against PyTorch.")

    @OptionGroup var options: BenchTrainOptions

    func run() throws { try TrainingStepReport(workload: .gpt, options: options, runs: options.runs).run() }
}

/// A figure the issue quotes for a peer this command does not run.
struct QuotedReference: Encodable {
    var peer: String
    var milliseconds: Double
    var source: String
}

/// The shared implementation of `opal bench train <workload>`: Opal on each device, then PyTorch on the CPU
/// in the same run, then a table (or JSON) with the ratio of each device's median step to PyTorch's.
struct TrainingStepReport {
    let workload: TrainingStepBenchmark.Workload
    let options: BenchTrainOptions
    /// Timed steps, or nil for the workload's time-budgeted default.
    let runs: Int?

    /// The issues' PyTorch CPU figures (2 threads, this machine class: #3 for R1–R5, #5 for R6), for the
    /// table's footer.
    var issuePyTorchMilliseconds: (issue: Int, milliseconds: Double) {
        switch workload {
        case .mlp: (3, 4.0)
        case .cnn: (3, 18)
        case .autoencoder: (3, 2.4)
        case .gan: (3, 37)
        case .gpt: (5, 38)
        }
    }

    /// Issue #3's tinygrad figures on PoCL's OpenCL device, quoted, never measured here.
    var quotedOpenCLReferences: [QuotedReference] {
        switch workload {
        case .cnn: [QuotedReference(peer: "tinygrad OpenCL (PoCL)", milliseconds: 82, source: "quoted by issue #3, not measured")]
        case .gan: [QuotedReference(peer: "tinygrad OpenCL (PoCL)", milliseconds: 1900, source: "quoted by issue #3, not measured")]
        case .mlp, .autoencoder, .gpt: []
        }
    }

    struct Report: Encodable {
        var workload: String
        var results: [TrainingStepBenchmark.Result]
        var pytorchCPUMilliseconds: Double?
        var pytorchNote: String
        /// Absent for R1 and R4 (the issue quotes no OpenCL peer for them).
        var quotedReferences: [QuotedReference]?
        /// With `--rounds` above 1: each round's native-CPU and PyTorch medians and their ratio.
        var rounds: [Round]?
    }

    /// One round of the alternating native-CPU / PyTorch comparison.
    struct Round: Encodable {
        var opalMilliseconds: Double
        var pytorchMilliseconds: Double
        var ratio: Double
        init(opalMilliseconds: Double, pytorchMilliseconds: Double) {
            (self.opalMilliseconds, self.pytorchMilliseconds) = (opalMilliseconds, pytorchMilliseconds)
            ratio = opalMilliseconds / pytorchMilliseconds
        }
    }

    func devices() throws -> [Device] {
        let registry = DeviceRegistry.shared
        if let device = options.device { return [try registry.device(for: DeviceRequest(parsing: device))] }
        var devices = [registry.cpu]
        for info in registry.openCL {
            do { devices.append(try registry.openCL(info.index)) } catch { printError("skipping opencl:\(info.index): \(error)") }
        }
        return devices
    }

    func run() throws {
        let name = workload.identifier
        let benchmark = TrainingStepBenchmark(workload: workload, runs: runs)
        var results: [TrainingStepBenchmark.Result] = []
        for device in try devices() {
            if !options.json { printError("\(name) on \(device.name)…") }
            results.append(try benchmark.run(on: device))
        }
        var (pytorchMilliseconds, pytorchNote) = pytorch()
        // Further rounds alternate the native CPU and PyTorch; the CPU row then shows the medians.
        var rounds: [Round] = []
        if let first = pytorchMilliseconds, options.rounds > 1,
           let index = results.firstIndex(where: { $0.device == "cpu" }) {
            rounds.append(Round(opalMilliseconds: results[index].step.medianMilliseconds, pytorchMilliseconds: first))
            let cpu = DeviceRegistry.shared.cpu
            for round in 2...options.rounds {
                if !options.json { printError("round \(round) of \(options.rounds): \(name) on cpu, then PyTorch…") }
                let opal = try benchmark.run(on: cpu)
                guard let torch = pytorch().0 else { break }
                rounds.append(Round(opalMilliseconds: opal.step.medianMilliseconds, pytorchMilliseconds: torch))
            }
            // The CPU row: the median (and spread) of the rounds' medians, each of `runs` steps.
            let runs = results[index].step.runs
            results[index].step = Measurement(samples: rounds.map(\.opalMilliseconds), clock: results[index].step.clock)
            results[index].step.runs = runs
            let torchMedian = median(rounds.map(\.pytorchMilliseconds))
            pytorchMilliseconds = torchMedian
            pytorchNote += " in round 1; median of \(rounds.count) rounds \(format(torchMedian, 3)) ms"
        }
        let quoted = quotedOpenCLReferences
        if options.json {
            return try printJSON(Report(workload: name, results: results, pytorchCPUMilliseconds: pytorchMilliseconds,
                                        pytorchNote: pytorchNote, quotedReferences: quoted.isEmpty ? nil : quoted,
                                        rounds: rounds.isEmpty ? nil : rounds))
        }
        let counts = Set(results.map(\.step.runs)).sorted().map(String.init).joined(separator: "/")
        print("\(name) training step: \(workload.summary) · median of \(counts) steps after warm-up")
        print(pad("device", 10) + pad("ms/step", 10) + pad("p10", 9) + pad("p90", 9) + pad("GFLOP/s", 10)
              + pad("waits/step", 12) + pad("vs PyTorch CPU", 16) + "  device")
        let roundRatio = rounds.isEmpty ? nil : median(rounds.map(\.ratio))
        for result in results {
            var ratio = pytorchMilliseconds.map { format(result.step.medianMilliseconds / $0) + "×" } ?? "-"
            if result.device == "cpu", let roundRatio { ratio = format(roundRatio) + "×" }
            print(pad(result.device, 10) + pad(format(result.step.medianMilliseconds, 3), 10)
                  + pad(format(result.step.p10Milliseconds, 3), 9) + pad(format(result.step.p90Milliseconds, 3), 9)
                  + pad(format(result.gigaflopsPerSecond, 1), 10)
                  + pad(result.hostWaitsPerStep.map { format($0, 1) } ?? "-", 12) + pad(ratio, 16)
                  + "  " + result.deviceDescription)
        }
        var goal = "goal on the native CPU: ≤ 0.8× PyTorch CPU"
        if let pytorchMilliseconds, let cpu = results.first(where: { $0.device == "cpu" }) {
            let ratio = roundRatio ?? cpu.step.medianMilliseconds / pytorchMilliseconds
            goal += ratio <= 0.8 ? " (met: \(format(ratio))×)" : " (not met: \(format(ratio))×)"
        }
        print("reference: \(pytorchNote) · \(goal)")
        if !rounds.isEmpty {
            print("rounds (native CPU ms / PyTorch ms = ratio; the CPU row shows the medians): "
                  + rounds.map { "\(format($0.opalMilliseconds, 1)) / \(format($0.pytorchMilliseconds, 1)) = \(format($0.ratio))×" }
                      .joined(separator: " · "))
        }
        let quotedPyTorch = issuePyTorchMilliseconds
        print("issue #\(quotedPyTorch.issue) quotes PyTorch CPU (2 threads) at ≈ \(format(quotedPyTorch.milliseconds, 1)) ms for \(name) on this machine class")
        let openCL = results.filter { $0.device.hasPrefix("opencl") }
        for reference in quoted where !openCL.isEmpty {
            let ratios = openCL.map { "\($0.device) \(format($0.step.medianMilliseconds / reference.milliseconds))×" }
            print("\(reference.peer): ≈ \(format(reference.milliseconds, 0)) ms for \(name) (\(reference.source)) · "
                  + "Opal/tinygrad: " + ratios.joined(separator: ", "))
        }
        print("timing: \(Set(results.map(\.step.clock)).sorted().joined(separator: ", ")) · "
              + "GFLOP/s counts the matrix products and convolutions only")
        if options.profile { try printKernelProfiles(benchmark) }
    }

    /// The kernels of one step on each OpenCL device, largest device time first (the top 15).
    func printKernelProfiles(_ benchmark: TrainingStepBenchmark) throws {
        for device in try devices() {
            guard let entries = try benchmark.kernelProfile(on: device) else { continue }
            let total = entries.reduce(0) { $0 + $1.milliseconds }
            print("\nkernels of one \(workload.identifier) step on \(device.name): \(format(total, 3)) ms of device time in \(entries.reduce(0) { $0 + $1.launches }) launches (CLBlast GEMMs not seen)")
            print(pad("ms", 10) + pad("share", 8) + pad("launches", 10) + "  kernel")
            for entry in entries.prefix(15) {
                print(pad(format(entry.milliseconds, 3), 10) + pad(format(100 * entry.milliseconds / max(total, 1e-9), 1) + "%", 8)
                      + pad(String(entry.launches), 10) + "  " + entry.kernel)
            }
        }
    }

    /// PyTorch's median step on the CPU for this workload, measured now, and a line saying what it is.
    func pytorch() -> (Double?, String) {
        guard !options.noPyTorch else { return (nil, "skipped (--no-pytorch)") }
        let name = workload.identifier
        let threadCount = options.threads ?? ProcessInfo.processInfo.activeProcessorCount
        if !options.json { printError("\(name) in PyTorch (CPU, \(threadCount) threads)…") }
        var arguments = ["--device", "cpu", "--threads", "\(threadCount)", "--workloads", name]
        if workload == .gan { arguments += ["--steps", "100", "--warmup", "10"] }
        switch PythonPeer.pytorch.run(arguments) {
        case .measured(let object):
            guard let entry = object[name] as? [String: Any], let median = entry["median_ms"] as? Double else {
                return (nil, "the PyTorch reference printed no \(name) figure")
            }
            return (median, "PyTorch \(entry["torch"] as? String ?? "") CPU, \(threadCount) threads: \(format(median, 3)) ms")
        case .missing(let reason), .failed(let reason):
            return (nil, reason)
        }
    }
}
