import ArgumentParser
import Foundation
import Opal
import OpalBenchmarks

/// Options shared by `opal bench lstm|gru` and `opal bench train lstm`.
struct RecurrentBenchOptions: ParsableArguments {
    @Option(name: .long, help: "Device to time (auto, gpu, cpu, opencl:N); default: every device.")
    var device: String?

    @Option(help: "Timed runs per implementation (after warm-up); the median is reported. Default: bench lstm|gru 3 (10 on GPUs); bench train lstm as many steps as fit in about 10 s, 5 to 50.")
    var runs: Int?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Threads for the PyTorch CPU reference (default: the processor count).")
    var threads: Int?

    @Flag(name: .customLong("no-pytorch"), help: "Skip the PyTorch reference.")
    var noPyTorch = false

    @Flag(name: .customLong("no-composed"), help: "Skip the layer composed from plain ops (time the fused cell only).")
    var noComposed = false

    @Option(help: "Batch size (default: the issue's).")
    var batch: Int?

    @Option(help: "Sequence length (default: the issue's).")
    var seq: Int?

    @Option(help: "Input features per step; the embedding size for `bench train lstm` (default: the issue's).")
    var input: Int?

    @Option(help: "Hidden size (default: the issue's).")
    var hidden: Int?

    func validate() throws {
        if let device { do { _ = try DeviceRequest(parsing: device) } catch { throw ValidationError("\(error)") } }
        if let runs, runs <= 0 { throw ValidationError("--runs must be positive, got \(runs)") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive, got \(threads)") }
        for (name, value) in [("--batch", batch), ("--seq", seq), ("--input", input), ("--hidden", hidden)] {
            if let value, value <= 0 { throw ValidationError("\(name) must be positive, got \(value)") }
        }
    }

    /// The chosen device, or the native CPU and every OpenCL device.
    func devices() throws -> [Device] {
        let registry = DeviceRegistry.shared
        if let device { return [try registry.device(for: DeviceRequest(parsing: device))] }
        var devices = [registry.cpu]
        for info in registry.openCL {
            do { devices.append(try registry.openCL(info.index)) } catch { printError("skipping opencl:\(info.index): \(error)") }
        }
        return devices
    }

    var threadCount: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

    /// Runs the PyTorch reference for `workload` on the CPU with `arguments` added; returns its median
    /// (ms) and a line saying what it is, or nil and why not.
    func pytorch(_ workload: String, _ arguments: [String]) -> (Double?, String) {
        guard !noPyTorch else { return (nil, "skipped (--no-pytorch)") }
        if !json { printError("\(workload) in PyTorch (CPU, \(threadCount) threads)…") }
        switch PythonPeer.pytorch.run(["--device", "cpu", "--threads", "\(threadCount)", "--workloads", workload] + arguments) {
        case .measured(let object):
            guard let entry = object[workload] as? [String: Any], let median = entry["median_ms"] as? Double else {
                return (nil, "the PyTorch reference printed no \(workload) figure")
            }
            return (median, "PyTorch \(entry["torch"] as? String ?? "") CPU, \(threadCount) threads: \(format(median, 3)) ms")
        case .missing(let reason), .failed(let reason):
            return (nil, reason)
        }
    }
}

/// `opal bench lstm`: K4.
struct BenchLSTMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lstm",
        abstract: "K4: LSTM layer forward + backward (batch 64, seq 128, input 256, hidden 512), fused vs composed cell, per device and against PyTorch.")

    @OptionGroup var options: RecurrentBenchOptions

    @Flag(help: "Instead: time the pieces of a run one by one (GEMMs, gate additions, cell updates, forward, forward + backward).")
    var phases = false

    func run() throws { try RecurrentLayerReport(cell: .lstm, options: options).run(phases: phases) }
}

/// `opal bench gru`: K5.
struct BenchGRUCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gru",
        abstract: "K5: GRU layer forward + backward (batch 64, seq 128, input 256, hidden 512), fused vs composed cell, per device and against PyTorch.")

    @OptionGroup var options: RecurrentBenchOptions

    @Flag(help: "Instead: time the pieces of a run one by one (GEMMs, gate additions, cell updates, forward, forward + backward).")
    var phases = false

    func run() throws { try RecurrentLayerReport(cell: .gru, options: options).run(phases: phases) }
}

/// `opal bench train lstm`: R3.
struct BenchTrainLSTMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lstm",
        abstract: "R3: character LSTM language model step (Embedding 65×64, LSTM 64→256, Linear 256→65, batch 32, seq 64, Adam), fused vs composed cell, per device and against PyTorch.")

    @OptionGroup var options: RecurrentBenchOptions

    func run() throws { try RecurrentStepReport(options: options).run() }
}

/// Ratio of `value` to `reference` as "0.85×", or "-".
private func ratio(_ value: Double?, _ reference: Double?) -> String {
    guard let value, let reference, reference > 0 else { return "-" }
    return format(value / reference) + "×"
}

/// The goal lines under the recurrent tables: the native CPU against PyTorch, the fused cell against the composed one on OpenCL.
private func goalLines(cpuMilliseconds: Double?, pytorchMilliseconds: Double?, openCLSpeedups: [(String, Double)]) -> [String] {
    var cpuGoal = "goal on the native CPU: ≤ 0.8× PyTorch CPU"
    if let cpuMilliseconds, let pytorchMilliseconds {
        let value = cpuMilliseconds / pytorchMilliseconds
        cpuGoal += value <= 0.8 ? " (met: \(format(value))×)" : " (not met: \(format(value))×)"
    }
    var fusedGoal = "goal on OpenCL: fused ≥ 1.5× faster than composed"
    if !openCLSpeedups.isEmpty {
        fusedGoal += " (" + openCLSpeedups.map { "\($0.0) \(format($0.1))×, \($0.1 >= 1.5 ? "met" : "not met")" }
            .joined(separator: "; ") + ")"
    }
    return [cpuGoal, fusedGoal]
}

/// `opal bench lstm|gru`: the layer on each device (fused, then composed), then PyTorch on the CPU.
struct RecurrentLayerReport {
    let cell: RecurrentBenchmark.Cell
    let options: RecurrentBenchOptions

    /// Issue #4's PyTorch CPU figures for the full K4/K5 shapes on this machine.
    var issuePyTorchMilliseconds: Double { cell == .lstm ? 242 : 369 }

    var shape: RecurrentBenchmark.Shape {
        let issue = RecurrentBenchmark.Shape.issue
        return RecurrentBenchmark.Shape(batch: options.batch ?? issue.batch, sequenceLength: options.seq ?? issue.sequenceLength,
                                        inputSize: options.input ?? issue.inputSize, hiddenSize: options.hidden ?? issue.hiddenSize)
    }

    struct Shape: Encodable {
        var batch: Int, sequenceLength: Int, inputSize: Int, hiddenSize: Int
    }

    struct Report: Encodable {
        var workload: String
        var layer: String
        var shape: Shape
        var results: [RecurrentBenchmark.Result]
        var pytorchCPUMilliseconds: Double?
        var pytorchCPUGigaflops: Double?
        var pytorchNote: String
    }

    struct DevicePhases: Encodable {
        var device: String
        var deviceDescription: String
        var phases: [RecurrentBenchmark.Phase]
    }

    struct PhaseReport: Encodable {
        var workload: String
        var shape: Shape
        var devices: [DevicePhases]
    }

    /// `--phases`: each device's breakdown of a run.
    func runPhases() throws {
        let shape = self.shape
        let benchmark = RecurrentBenchmark(cell: cell, shape: shape, runs: options.runs)
        var all: [DevicePhases] = []
        for device in try options.devices() {
            let phases = try benchmark.phases(on: device) { if !options.json { printError($0) } }
            all.append(DevicePhases(device: device.name, deviceDescription: device.backend.deviceDescription, phases: phases))
        }
        if options.json {
            return try printJSON(PhaseReport(workload: cell.identifier, shape: Shape(
                batch: shape.batch, sequenceLength: shape.sequenceLength, inputSize: shape.inputSize, hiddenSize: shape.hiddenSize),
                devices: all))
        }
        print("\(cell.identifier) \(cell.name) phases: \(shape) · each piece timed alone, median of \(all.first?.phases.first?.time.runs ?? 0) runs")
        for entry in all {
            print("\(entry.device): \(entry.deviceDescription)")
            for phase in entry.phases {
                print("  " + phase.name.padding(toLength: 44, withPad: " ", startingAt: 0)
                      + pad(format(phase.time.medianMilliseconds, 2), 11) + " ms"
                      + (phase.gigaflopsPerSecond.map { pad(format($0, 1), 9) + " GFLOP/s" } ?? ""))
            }
        }
    }

    func run(phases: Bool = false) throws {
        if phases { return try runPhases() }
        let shape = self.shape
        var benchmark = RecurrentBenchmark(cell: cell, shape: shape, runs: options.runs)
        benchmark.includeComposed = !options.noComposed
        var results: [RecurrentBenchmark.Result] = []
        for device in try options.devices() {
            results.append(try benchmark.run(on: device) { if !options.json { printError($0) } })
        }
        let peerRuns = max(5, options.runs ?? 5)
        let (pytorch, note) = options.pytorch(cell.identifier, [
            "--batch", "\(shape.batch)", "--seq", "\(shape.sequenceLength)", "--input-size", "\(shape.inputSize)",
            "--hidden", "\(shape.hiddenSize)", "--warmup", "2", "--steps", "\(peerRuns)"])
        let flops = RecurrentBenchmark.flops(cell: cell, shape: shape)
        if options.json {
            return try printJSON(Report(
                workload: cell.identifier, layer: cell.name,
                shape: Shape(batch: shape.batch, sequenceLength: shape.sequenceLength, inputSize: shape.inputSize,
                             hiddenSize: shape.hiddenSize),
                results: results, pytorchCPUMilliseconds: pytorch,
                pytorchCPUGigaflops: pytorch.map { gigaflops(flops, milliseconds: $0) }, pytorchNote: note))
        }
        let counts = Set(results.map(\.fused.runs)).sorted().map(String.init).joined(separator: "/")
        print("\(cell.identifier) \(cell.name) forward + backward (Σ outputs, gradients of weights and input): \(shape) · median of \(counts) runs after \(benchmark.warmup) warm-up")
        print(pad("device", 10) + pad("fused ms", 11) + pad("GFLOP/s", 9) + pad("composed ms", 13) + pad("GFLOP/s", 9)
              + pad("composed/fused", 16) + pad("vs PyTorch CPU", 16) + "  device")
        for result in results {
            print(pad(result.device, 10) + pad(format(result.fused.medianMilliseconds, 2), 11)
                  + pad(format(result.fusedGigaflops, 1), 9)
                  + pad(result.composed.map { format($0.medianMilliseconds, 2) } ?? "-", 13)
                  + pad(result.composedGigaflops.map { format($0, 1) } ?? "-", 9)
                  + pad(result.fusedSpeedup.map { format($0) + "×" } ?? "-", 16)
                  + pad(ratio(result.fused.medianMilliseconds, pytorch), 16) + "  " + result.deviceDescription)
        }
        var reference = "reference: \(note)"
        if let pytorch { reference += " (\(format(gigaflops(flops, milliseconds: pytorch), 1)) GFLOP/s)" }
        print(reference)
        let openCL = results.filter { $0.device.hasPrefix("opencl") }.compactMap { r in r.fusedSpeedup.map { (r.device, $0) } }
        for line in goalLines(cpuMilliseconds: results.first { $0.device == "cpu" }?.fused.medianMilliseconds,
                              pytorchMilliseconds: pytorch, openCLSpeedups: openCL) {
            print(line)
        }
        if shape.batch == 64, shape.sequenceLength == 128, shape.inputSize == 256, shape.hiddenSize == 512 {
            print("issue #4 quotes PyTorch CPU at ≈ \(format(issuePyTorchMilliseconds, 0)) ms for \(cell.identifier) on this machine")
        }
        print("timing: \(Set(results.map(\.fused.clock)).sorted().joined(separator: ", ")) · GFLOP/s counts the input projection and recurrent GEMMs (×3 for forward + backward)")
    }
}

/// `opal bench train lstm`: R3 on each device (fused, then composed), then PyTorch on the CPU.
struct RecurrentStepReport {
    let options: RecurrentBenchOptions

    var shape: RecurrentStepBenchmark.Shape {
        var shape = RecurrentStepBenchmark.Shape.r3
        if let batch = options.batch { shape.batch = batch }
        if let seq = options.seq { shape.sequenceLength = seq }
        if let input = options.input { shape.embeddingSize = input }
        if let hidden = options.hidden { shape.hiddenSize = hidden }
        return shape
    }

    struct Report: Encodable {
        var workload: String
        var model: String
        var results: [RecurrentStepBenchmark.Result]
        var pytorchCPUMilliseconds: Double?
        var pytorchNote: String
    }

    func run() throws {
        let shape = self.shape
        var benchmark = RecurrentStepBenchmark(shape: shape, runs: options.runs)
        benchmark.includeComposed = !options.noComposed
        var results: [RecurrentStepBenchmark.Result] = []
        for device in try options.devices() {
            results.append(try benchmark.run(on: device) { if !options.json { printError($0) } })
        }
        let (pytorch, note) = options.pytorch("R3", [
            "--batch", "\(shape.batch)", "--seq", "\(shape.sequenceLength)", "--input-size", "\(shape.embeddingSize)",
            "--hidden", "\(shape.hiddenSize)"])
        if options.json {
            return try printJSON(Report(workload: "R3", model: shape.description, results: results,
                                        pytorchCPUMilliseconds: pytorch, pytorchNote: note))
        }
        let counts = Set(results.map(\.step.runs)).sorted().map(String.init).joined(separator: "/")
        print("R3 training step: \(shape), cross-entropy, Adam · median of \(counts) steps after warm-up")
        print(pad("device", 10) + pad("ms/step", 10) + pad("p10", 9) + pad("p90", 9) + pad("GFLOP/s", 9)
              + pad("composed ms", 13) + pad("composed/fused", 16) + pad("waits/step", 12) + pad("vs PyTorch CPU", 16) + "  device")
        for result in results {
            print(pad(result.device, 10) + pad(format(result.step.medianMilliseconds, 3), 10)
                  + pad(format(result.step.p10Milliseconds, 3), 9) + pad(format(result.step.p90Milliseconds, 3), 9)
                  + pad(format(result.gigaflopsPerSecond, 1), 9)
                  + pad(result.composedStep.map { format($0.medianMilliseconds, 3) } ?? "-", 13)
                  + pad(result.fusedSpeedup.map { format($0) + "×" } ?? "-", 16)
                  + pad(result.hostWaitsPerStep.map { format($0, 1) } ?? "-", 12)
                  + pad(ratio(result.step.medianMilliseconds, pytorch), 16) + "  " + result.deviceDescription)
        }
        print("reference: \(note)")
        let openCL = results.filter { $0.device.hasPrefix("opencl") }.compactMap { r in r.fusedSpeedup.map { (r.device, $0) } }
        for line in goalLines(cpuMilliseconds: results.first { $0.device == "cpu" }?.step.medianMilliseconds,
                              pytorchMilliseconds: pytorch, openCLSpeedups: openCL) {
            print(line)
        }
        if options.batch == nil, options.seq == nil, options.input == nil, options.hidden == nil {
            print("issue #4 quotes PyTorch CPU at ≈ 14.5 ms for R3 on this machine")
        }
        print("timing: \(Set(results.map(\.step.clock)).sorted().joined(separator: ", ")) · GFLOP/s counts the LSTM and output GEMMs (×3 for forward + backward)")
    }
}
