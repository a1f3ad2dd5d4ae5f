import ArgumentParser

/// `opal bench …`: kernel and training-step benchmarks.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmark kernels and training steps against reference libraries.",
        subcommands: [])
}
