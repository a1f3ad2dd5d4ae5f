import ArgumentParser

/// `opal`: train models, list devices and run benchmarks on any OpenCL device or the native CPU.
@main
struct OpalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "opal",
        abstract: "Deep learning on any GPU through OpenCL, with a native CPU fallback.",
        subcommands: [DevicesCommand.self, TrainCommand.self, SampleGroupCommand.self, BenchCommand.self])
}
