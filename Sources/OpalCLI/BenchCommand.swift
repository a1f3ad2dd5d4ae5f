import ArgumentParser
import Foundation
import Opal
import OpalBenchmarks

/// `opal bench …`: kernel and training-step benchmarks.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmark kernels and training steps against reference libraries.",
        subcommands: [BenchGemmCommand.self, BenchConvCommand.self, BenchTrainCommand.self])
}

/// Options shared by the benchmark commands.
struct BenchOptions: ParsableArguments {
    @Option(help: "Timed runs per measurement (after warm-up); the median is reported.")
    var runs = 20

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        guard runs > 0 else { throw ValidationError("--runs must be positive, got \(runs)") }
    }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func format(_ value: Double, _ decimals: Int = 2) -> String { String(format: "%.\(decimals)f", value) }

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

/// `opal bench gemm`: K1 square SGEMM, Opal against the reference library in the same run.
struct BenchGemmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm", abstract: "Square SGEMM: Opal's matmul versus CLBlast (OpenCL) or OpenBLAS (CPU).")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var bench: BenchOptions

    @Option(help: "Comma-separated matrix sizes.")
    var sizes = "256,512,1024,2048"

    func validate() throws {
        guard parsedSizes != nil else { throw ValidationError("--sizes must be comma-separated positive integers, got '\(sizes)'") }
    }

    var parsedSizes: [Int]? {
        let values = sizes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return values.compactMap { $0 }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        let benchmark = GemmBenchmark(sizes: parsedSizes ?? [], runs: bench.runs)
        let rows = try benchmark.run(on: device) { if !bench.json { printError($0) } }
        if bench.json {
            struct Report: Encodable { var device: String; var description: String; var rows: [GemmBenchmark.Row] }
            return try printJSON(Report(device: device.name, description: device.backend.deviceDescription, rows: rows))
        }
        print("SGEMM C = A·B (M = N = K) on \(device) · median of \(bench.runs) runs after warm-up")
        let hasOwn = rows.contains { $0.ownKernel != nil }
        let referenceName = rows.first?.referenceName ?? "reference"
        var header = pad("size", 6) + pad("opal ms", 11) + pad("GFLOP/s", 10) + pad("\(referenceName) ms", 14)
            + pad("GFLOP/s", 10) + pad("ref/opal", 10)
        if hasOwn { header += pad("gemm.cl ms", 12) + pad("GFLOP/s", 10) }
        print(header)
        for row in rows {
            var line = pad("\(row.size)", 6) + pad(format(row.opal.medianMilliseconds, 3), 11)
                + pad(format(row.opalGigaflops, 1), 10) + pad(format(row.reference.medianMilliseconds, 3), 14)
                + pad(format(row.referenceGigaflops, 1), 10) + pad(format(row.speedup), 10)
            if let own = row.ownKernel {
                line += pad(format(own.medianMilliseconds, 3), 12)
                    + pad(format(gigaflops(row.flops, milliseconds: own.medianMilliseconds), 1), 10)
            }
            print(line)
        }
        print("timing: \(rows.first?.opal.clock ?? "-") · opal = tensor matmul (allocation + \(device.kind == .cpu ? "OpenBLAS" : "Opal's gemm_fast kernel")); ref = the library called directly")
    }
}

/// `opal bench train …`: reference training steps.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Time reference training steps (forward + backward + optimizer).",
        subcommands: [BenchTrainMLPCommand.self])
}

/// `opal bench train mlp`: R1 on every device (or the chosen one), beside PyTorch CPU.
struct BenchTrainMLPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mlp",
        abstract: "R1: MLP 784-512-512-10 step (batch 128, Adam), data on the device, per device and against PyTorch.")

    @Option(name: .long, help: "Device to time (auto, gpu, cpu, opencl:N); default: every device.")
    var device: String?

    @OptionGroup var bench: BenchOptions

    @Option(help: "Threads for the PyTorch CPU reference (default: the processor count).")
    var threads: Int?

    @Flag(name: .customLong("no-pytorch"), help: "Skip the PyTorch reference.")
    var noPyTorch = false

    func validate() throws {
        if let device { do { _ = try DeviceRequest(parsing: device) } catch { throw ValidationError("\(error)") } }
    }

    func run() throws {
        let registry = DeviceRegistry.shared
        var devices: [Device] = []
        if let device {
            devices = [try registry.device(for: DeviceRequest(parsing: device))]
        } else {
            devices = [registry.cpu]
            for info in registry.openCL {
                do { devices.append(try registry.openCL(info.index)) } catch { printError("skipping opencl:\(info.index): \(error)") }
            }
        }
        var benchmark = MLPStepBenchmark()
        benchmark.runs = max(bench.runs, 10)
        var results: [MLPStepBenchmark.Result] = []
        for device in devices {
            if !bench.json { printError("R1 on \(device.name)…") }
            results.append(try benchmark.run(on: device))
        }
        var pytorchMilliseconds: Double?
        var pytorchNote = "skipped (--no-pytorch)"
        if !noPyTorch {
            let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
            if !bench.json { printError("R1 in PyTorch (CPU, \(threadCount) threads)…") }
            switch PyTorchPeer.run(["--device", "cpu", "--threads", "\(threadCount)", "--workloads", "R1"]) {
            case .measured(let object):
                if let r1 = object["R1"] as? [String: Any], let median = r1["median_ms"] as? Double {
                    pytorchMilliseconds = median
                    pytorchNote = "PyTorch \(r1["torch"] as? String ?? "") CPU, \(threadCount) threads: \(format(median, 3)) ms"
                } else {
                    pytorchNote = "the PyTorch reference printed no R1 figure"
                }
            case .unavailable(let reason):
                pytorchNote = reason
            }
        }
        if bench.json {
            struct Report: Encodable {
                var results: [MLPStepBenchmark.Result]
                var pytorchCPUMilliseconds: Double?
                var pytorchNote: String
            }
            return try printJSON(Report(results: results, pytorchCPUMilliseconds: pytorchMilliseconds, pytorchNote: pytorchNote))
        }
        print("R1 training step: MLP 784-512-512-10, batch 128, cross-entropy, Adam · median of \(benchmark.runs) steps after warm-up")
        print(pad("device", 10) + pad("ms/step", 10) + pad("p10", 9) + pad("p90", 9) + pad("GFLOP/s", 10)
              + pad("waits/step", 12) + pad("vs PyTorch CPU", 16) + "  device")
        for result in results {
            let ratio = pytorchMilliseconds.map { format(result.step.medianMilliseconds / $0) + "×" } ?? "-"
            print(pad(result.device, 10) + pad(format(result.step.medianMilliseconds, 3), 10)
                  + pad(format(result.step.p10Milliseconds, 3), 9) + pad(format(result.step.p90Milliseconds, 3), 9)
                  + pad(format(result.gigaflopsPerSecond, 1), 10)
                  + pad(result.hostWaitsPerStep.map { format($0, 1) } ?? "-", 12) + pad(ratio, 16)
                  + "  " + result.deviceDescription)
        }
        print("reference: \(pytorchNote) · goal on the native CPU: ≤ 0.8× PyTorch CPU")
    }
}

/// `opal bench conv`: K2 and R2 convolutions, forward and both backward passes.
struct BenchConvCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv",
        abstract: "Conv2D forward, backward-data, backward-weight: Opal's chosen algorithm vs im2col + CLBlast (OpenCL) at the K2 and R2 shapes.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var bench: BenchOptions

    @Option(help: "Shapes: k2, r2 or all.")
    var shapes = "all"

    func validate() throws {
        guard ["k2", "r2", "all"].contains(shapes) else { throw ValidationError("--shapes must be k2, r2 or all, got '\(shapes)'") }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        let chosen: [ConvBenchmark.Shape] = shapes == "k2" ? ConvBenchmark.k2Shapes
            : shapes == "r2" ? ConvBenchmark.r2Shapes : ConvBenchmark.k2Shapes + ConvBenchmark.r2Shapes
        let benchmark = ConvBenchmark(shapes: chosen, runs: bench.runs)
        let rows = try benchmark.run(on: device) { if !bench.json { printError($0) } }
        if bench.json {
            struct Report: Encodable { var device: String; var description: String; var rows: [ConvBenchmark.Row] }
            return try printJSON(Report(device: device.name, description: device.backend.deviceDescription, rows: rows))
        }
        print("Conv2D on \(device) · median of \(bench.runs) runs after warm-up")
        print(pad("shape", 12) + pad("pass", 16) + pad("algorithm", 15) + pad("opal ms", 11) + pad("GFLOP/s", 10)
              + pad("im2col+CLBlast ms", 19) + pad("ref/opal", 10))
        for row in rows {
            print(pad(row.shape, 12) + pad(row.pass.rawValue, 16) + pad(row.algorithm, 15)
                  + pad(format(row.opal.medianMilliseconds, 3), 11) + pad(format(row.opalGigaflops, 1), 10)
                  + pad(row.reference.map { format($0.medianMilliseconds, 3) } ?? "-", 19)
                  + pad(row.speedup.map { format($0) } ?? "-", 10))
        }
    }
}
