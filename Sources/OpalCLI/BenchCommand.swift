import ArgumentParser
import Foundation
import Opal
import OpalBenchmarks

/// `opal bench …`: kernel and training-step benchmarks.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmark kernels and training steps against reference libraries.",
        subcommands: [BenchSuiteCommand.self, BenchTuneCommand.self, BenchPeakCommand.self, BenchGemmCommand.self, BenchConvCommand.self, BenchTrainCommand.self, BenchLSTMCommand.self, BenchGRUCommand.self, BenchAttentionCommand.self],
        defaultSubcommand: BenchSuiteCommand.self)
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
        let peak = try? PeakProbe.peak(for: device)
        print("SGEMM C = A·B (M = N = K) on \(device) · median of \(bench.runs) runs after warm-up")
        if let peak { print(peakLine(peak)) }
        let hasOwn = rows.contains { $0.ownKernel != nil }
        let referenceName = rows.first?.referenceName ?? "reference"
        var header = pad("size", 6) + pad("opal ms", 11) + pad("GFLOP/s", 10) + pad("\(referenceName) ms", 14)
            + pad("GFLOP/s", 10) + pad("ref/opal", 10) + (peak == nil ? "" : pad("% peak", 8))
        if hasOwn { header += pad("gemm.cl ms", 12) + pad("GFLOP/s", 10) }
        print(header)
        for row in rows {
            var line = pad("\(row.size)", 6) + pad(format(row.opal.medianMilliseconds, 3), 11)
                + pad(format(row.opalGigaflops, 1), 10) + pad(format(row.reference.medianMilliseconds, 3), 14)
                + pad(format(row.referenceGigaflops, 1), 10) + pad(format(row.speedup), 10)
                + (peak.map { pad(format(100 * row.opalGigaflops / $0.gigaflops, 1), 8) } ?? "")
            if let own = row.ownKernel {
                line += pad(format(own.medianMilliseconds, 3), 12)
                    + pad(format(gigaflops(row.flops, milliseconds: own.medianMilliseconds), 1), 10)
            }
            print(line)
        }
        print("timing: \(rows.first?.opal.clock ?? "-") · opal = tensor matmul (allocation + \(device.kind == .cpu ? "OpenBLAS" : "Opal's gemm_fast kernel")); ref = the library called directly")
    }
}

/// `opal bench conv`: K2, R2 and R5 convolutions, forward and both backward passes.
struct BenchConvCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv",
        abstract: "Conv2D forward, backward-data, backward-weight: Opal's chosen algorithm vs im2col + CLBlast (OpenCL) at the K2, R2 and R5 shapes.")

    @OptionGroup var deviceOptions: DeviceOptions
    @OptionGroup var bench: BenchOptions

    @Option(help: "Shapes: k2, r2, r5 or all.")
    var shapes = "all"

    func validate() throws {
        guard ["k2", "r2", "r5", "all"].contains(shapes) else {
            throw ValidationError("--shapes must be k2, r2, r5 or all, got '\(shapes)'")
        }
    }

    func run() throws {
        let device = try deviceOptions.resolve()
        let chosen: [ConvBenchmark.Shape] = switch shapes {
        case "k2": ConvBenchmark.k2Shapes
        case "r2": ConvBenchmark.r2Shapes
        case "r5": ConvBenchmark.r5Shapes
        default: ConvBenchmark.k2Shapes + ConvBenchmark.r2Shapes + ConvBenchmark.r5Shapes
        }
        let benchmark = ConvBenchmark(shapes: chosen, runs: bench.runs)
        let rows = try benchmark.run(on: device) { if !bench.json { printError($0) } }
        if bench.json {
            struct Report: Encodable { var device: String; var description: String; var rows: [ConvBenchmark.Row] }
            return try printJSON(Report(device: device.name, description: device.backend.deviceDescription, rows: rows))
        }
        let peak = try? PeakProbe.peak(for: device)
        print("Conv2D on \(device) · median of \(bench.runs) runs after warm-up")
        if let peak { print(peakLine(peak)) }
        // The reference: im2col + CLBlast on OpenCL devices, im2col + OpenBLAS on the native CPU.
        let referenceName = (rows.first { $0.referenceName != nil }?.referenceName ?? "reference")
            .replacingOccurrences(of: " ", with: "")
        print(pad("shape", 12) + pad("pass", 16) + pad("algorithm", 24) + pad("opal ms", 11) + pad("GFLOP/s", 10)
              + pad("\(referenceName) ms", 19) + pad("ref/opal", 10) + (peak == nil ? "" : pad("% peak", 8)))
        for row in rows {
            print(pad(row.shape, 12) + pad(row.pass.rawValue, 16) + pad(row.algorithm, 24)
                  + pad(format(row.opal.medianMilliseconds, 3), 11) + pad(format(row.opalGigaflops, 1), 10)
                  + pad(row.reference.map { format($0.medianMilliseconds, 3) } ?? "-", 19)
                  + pad(row.speedup.map { format($0) } ?? "-", 10)
                  + (peak.map { pad(format(100 * row.opalGigaflops / $0.gigaflops, 1), 8) } ?? ""))
        }
    }
}

/// One line naming a device's measured peak, for the benchmark tables' "% peak" columns.
func peakLine(_ peak: DevicePeak) -> String {
    "device peak: \(format(peak.gigaflops, 1)) GFLOP/s fp32, \(format(peak.gigabytesPerSecond, 1)) GB/s (\(peak.method), measured \(peak.measured.prefix(10)); `opal bench peak` measures again)"
}

/// `opal bench peak`: measure (and store) the device's attainable fp32 rate and memory bandwidth.
struct BenchPeakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peak",
        abstract: "Measure a device's peak fp32 multiply-add rate and memory bandwidth (as clpeak does); other benchmarks report their share of it.")

    @Option(help: "Device to probe (auto, gpu, cpu, opencl:N); default: every device.")
    var device: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        var devices = [DeviceRegistry.shared.cpu]
        if let device { devices = [try Device.named(device)] } else {
            for info in DeviceRegistry.shared.openCL {
                do { devices.append(try DeviceRegistry.shared.openCL(info.index)) } catch { printError("skipping opencl:\(info.index): \(error)") }
            }
        }
        var peaks: [DevicePeak] = []
        for device in devices {
            if !json { printError("probing \(device.name)…") }
            let peak = try PeakProbe.peak(for: device, refresh: true)
            peaks.append(peak)
            if !json {
                print("\(pad(device.name, 10))  \(pad(format(peak.gigaflops, 1), 9)) GFLOP/s  \(pad(format(peak.gigabytesPerSecond, 1), 7)) GB/s  \(peak.deviceDescription)")
                print("            method: \(peak.method)")
            }
        }
        if json { try printJSON(peaks) }
        else if let url = PeakProbe.storeURL { print("stored in \(url.path); bench gemm|conv|train show each result's share of these") }
    }
}
