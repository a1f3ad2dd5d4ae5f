import ArgumentParser
import Foundation
import Opal
import OpalBenchmarks

/// `opal bench attention`: K3, fused against composed attention per device, and PyTorch's on the CPU.
struct BenchAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "K3: causal attention forward + backward (B 8, H 8, D 64, N 256/1024/4096), fused kernels vs composed ops, per device and against PyTorch.")

    @Option(name: .long, help: "Device to time (auto, gpu, cpu, opencl:N); default: every device.")
    var device: String?

    @Option(help: "Comma-separated sequence lengths N.")
    var sizes = AttentionBenchmark.issueSizes.map(String.init).joined(separator: ",")

    @Option(help: "Timed runs per implementation (after warm-up); the median is reported. Default: 3 (10 on GPUs).")
    var runs: Int?

    @Option(name: .customLong("memory-budget"), help: "GiB the composed form may need before it is skipped.")
    var memoryBudget = 4.0

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Threads for the PyTorch CPU reference (default: the processor count).")
    var threads: Int?

    @Flag(name: .customLong("no-pytorch"), help: "Skip the PyTorch reference.")
    var noPyTorch = false

    @Flag(name: .customLong("no-composed"), help: "Time the fused kernels only.")
    var noComposed = false

    var parsedSizes: [Int]? {
        let values = sizes.split(separator: ",", omittingEmptySubsequences: false)
            .map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return values.compactMap { $0 }
    }

    func validate() throws {
        if let device { do { _ = try DeviceRequest(parsing: device) } catch { throw ValidationError("\(error)") } }
        guard parsedSizes != nil else {
            throw ValidationError("--sizes must be comma-separated positive sequence lengths, got '\(sizes)'")
        }
        if let runs, runs <= 0 { throw ValidationError("--runs must be positive, got \(runs)") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive, got \(threads)") }
        guard memoryBudget > 0 else { throw ValidationError("--memory-budget must be positive, got \(memoryBudget)") }
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

    struct PyTorchRow: Encodable {
        var sequenceLength: Int
        var milliseconds: Double?
        var gigaflops: Double?
        var note: String
    }

    struct Report: Encodable {
        var workload = "K3"
        var sizes: [Int]
        var results: [AttentionBenchmark.Result]
        var pytorchCPU: [PyTorchRow]
    }

    func run() throws {
        let sizes = parsedSizes ?? []
        var results: [AttentionBenchmark.Result] = []
        for device in try devices() {
            var benchmark = AttentionBenchmark(sizes: sizes, runs: runs)
            benchmark.includeComposed = !noComposed
            benchmark.memoryBudgetBytes = memoryBudget * 1_073_741_824
            benchmark.peak = try? PeakProbe.peak(for: device)
            results.append(try benchmark.run(on: device) { if !json { printError($0) } })
        }
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let pytorch = sizes.map { n in pytorchRow(n, threads: threadCount) }
        if json { return try printJSON(Report(sizes: sizes, results: results, pytorchCPU: pytorch)) }

        print("K3 causal attention forward + backward (Σ O, gradients of Q, K, V): B 8, H 8, D 64 · median of \(runs.map(String.init) ?? "3 (GPU 10)") runs after warm-up")
        print(pad("device", 10) + pad("N", 6) + pad("fused ms", 11) + pad("GFLOP/s", 9) + pad("% peak", 8) + pad("fused MiB", 11)
              + pad("composed ms", 13) + pad("GFLOP/s", 9) + pad("% peak", 8) + pad("comp. MiB", 11)
              + pad("fused/comp.", 13) + pad("vs PyTorch", 12))
        for result in results {
            for row in result.rows {
                let torch = pytorch.first { $0.sequenceLength == row.sequenceLength }?.milliseconds
                let fusedTime = row.fused.time?.medianMilliseconds
                var line = pad(result.device, 10) + pad("\(row.sequenceLength)", 6) + columns(row.fused)
                if let note = row.composed.note {
                    line += "  " + note.padding(toLength: max(37, note.count), withPad: " ", startingAt: 0)   // the 4 columns' width
                } else {
                    line += columns(row.composed)
                }
                line += pad(row.fusedOverComposed.map { format($0) + "×" } ?? "-", 13)
                line += pad(fusedTime.flatMap { f in torch.map { format(f / $0) + "×" } } ?? "-", 12)
                print(line)
            }
        }
        for result in results {
            print("\(result.device): \(result.deviceDescription); peak \(result.peakGigaflops.map { format($0, 1) + " GFLOP/s" } ?? "unknown (`opal bench peak`)")")
            print("  memory: \(result.memoryMethod)")
        }
        for row in pytorch {
            print("PyTorch N\(row.sequenceLength): \(row.note)")
        }
        print("timing: \(Set(results.flatMap { $0.rows.compactMap { $0.fused.time?.clock } }).sorted().joined(separator: ", ")) · GFLOP/s counts forwardFLOPs × 3.5 (QKᵀ and PV, halved for causal; backward 2.5×)")
    }

    /// fused/composed columns: ms, GFLOP/s, % peak, MiB.
    private func columns(_ entry: AttentionBenchmark.Entry) -> String {
        pad(entry.time.map { format($0.medianMilliseconds, 2) } ?? "-", 11)
            + pad(entry.gigaflops.map { format($0, 1) } ?? "-", 9)
            + pad(entry.percentOfPeak.map { format($0, 1) } ?? "-", 8)
            + pad(entry.peakMemoryBytes.map { format(Double($0) / 1_048_576, 1) } ?? "-", 11)
    }

    /// PyTorch's `scaled_dot_product_attention` (causal, fp32) at N on the CPU.
    private func pytorchRow(_ n: Int, threads: Int) -> PyTorchRow {
        guard !noPyTorch else { return PyTorchRow(sequenceLength: n, note: "skipped (--no-pytorch)") }
        if !json { printError("K3 N\(n) in PyTorch (CPU, \(threads) threads)…") }
        let steps = max(3, runs ?? 3)
        switch PythonPeer.pytorch.run(["--device", "cpu", "--threads", "\(threads)", "--workloads", "K3", "--seq", "\(n)",
                                       "--warmup", "1", "--steps", "\(steps)"]) {
        case .measured(let object):
            guard let entry = object["K3"] as? [String: Any], let median = entry["median_ms"] as? Double else {
                return PyTorchRow(sequenceLength: n, note: "the PyTorch reference printed no K3 figure")
            }
            let rate = gigaflops(AttentionBenchmark.flops(AttentionBenchmark.descriptor(sequenceLength: n)), milliseconds: median)
            return PyTorchRow(sequenceLength: n, milliseconds: median, gigaflops: rate,
                              note: "PyTorch \(entry["torch"] as? String ?? "") CPU, \(threads) threads: \(format(median, 2)) ms, \(format(rate, 1)) GFLOP/s")
        case .missing(let reason), .failed(let reason):
            return PyTorchRow(sequenceLength: n, note: reason)
        }
    }
}
