import CBLAS
import Foundation
import Opal
import OpalCPU
import OpalOpenCL

/// What a device can attain at best: fp32 multiply-add rate and memory bandwidth, measured (as clpeak
/// does) so that benchmarks report each kernel's share of it.
///
/// - OpenCL devices: `peak_fma` (16 independent float4 multiply-add chains per work-item) and `peak_copy`
///   (float4 copy) from `Kernels/peak.cl`, timed with profiling events, median of several runs.
/// - Native CPU: the faster of OpenBLAS SGEMM at n = 2048 and, where an OpenCL device runs on this same
///   CPU (PoCL), its `peak_fma`; bandwidth from a multi-threaded `memcpy` of 256 MiB.
///
/// Results are stored in `$OPAL_CACHE_DIR/peaks.json` (default `~/.cache/opal/peaks.json`), keyed by
/// the device's description, so later benchmarks reuse them; `opal bench peak` measures again.
public struct DevicePeak: Codable, Sendable, Equatable {
    public var gigaflops: Double
    public var gigabytesPerSecond: Double
    /// How each figure was measured.
    public var method: String
    public var deviceDescription: String
    /// ISO 8601 date of the measurement.
    public var measured: String
}

public enum PeakProbe {
    /// Measures `device` now.
    public static func probe(_ device: Device) throws -> DevicePeak {
        let date = ISO8601DateFormatter().string(from: Date())
        if let backend = device.backend as? OpenCLBackend {
            let (flops, bytes) = try measureOpenCL(backend, on: device)
            return DevicePeak(gigaflops: flops, gigabytesPerSecond: bytes,
                              method: "peak_fma / peak_copy kernels (OpenCL events)",
                              deviceDescription: device.backend.deviceDescription, measured: date)
        }
        var flops = try measureSGEMM(on: device)
        var method = "OpenBLAS SGEMM n=2048"
        // PoCL on this same processor: its multiply-add kernel may go faster than SGEMM.
        for index in DeviceRegistry.shared.openCL.indices {
            guard let other = try? Device.openCL(index), other.kind == .openCLCPU,
                  let backend = other.backend as? OpenCLBackend,
                  let (fma, _) = try? measureOpenCL(backend, on: other, bandwidth: false) else { continue }
            if fma > flops { flops = fma; method = "peak_fma on \(backend.device.name)" }
        }
        return DevicePeak(gigaflops: flops, gigabytesPerSecond: measureMemcpy(),
                          method: "\(method); memcpy 256 MiB", deviceDescription: device.backend.deviceDescription,
                          measured: date)
    }

    /// The stored peak of `device`, measuring and storing it first when there is none (or `refresh`).
    public static func peak(for device: Device, refresh: Bool = false) throws -> DevicePeak {
        if !refresh, let stored = stored(for: device) { return stored }
        let peak = try probe(device)
        try? store(peak)
        return peak
    }

    /// The stored peak of `device`, if any.
    public static func stored(for device: Device) -> DevicePeak? {
        load()[device.backend.deviceDescription]
    }

    /// Adds (or replaces) `peak` in the store; the file is replaced atomically.
    public static func store(_ peak: DevicePeak) throws {
        guard let url = storeURL else { return }
        var all = load()
        all[peak.deviceDescription] = peak
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(all).write(to: url, options: .atomic)
    }

    public static var storeURL: URL? {
        if let value = ProcessInfo.processInfo.environment["OPAL_CACHE_DIR"], !value.isEmpty {
            return URL(fileURLWithPath: value, isDirectory: true).appending(path: "peaks.json")
        }
        return FileManager.default.homeDirectoryForCurrentUser.appending(path: ".cache/opal/peaks.json")
    }

    /// The store's entries; an unreadable or malformed file counts as empty (it is rewritten on the next store).
    static func load() -> [String: DevicePeak] {
        guard let url = storeURL, let data = try? Data(contentsOf: url),
              let entries = try? JSONDecoder().decode([String: DevicePeak].self, from: data) else { return [:] }
        return entries
    }

    // MARK: Measurements

    /// GFLOP/s of `peak_fma` and GB/s of `peak_copy`; each run is sized to take ≥ 20 ms.
    static func measureOpenCL(_ backend: OpenCLBackend, on device: Device, bandwidth: Bool = true) throws -> (Double, Double) {
        // GPUs need many work-items in flight; CPU devices run one work-item per group (see peakMultiplyAdd),
        // and a few per core keep them busy without paying per-group overhead.
        let count = backend.device.type == .cpu ? backend.device.computeUnits * 64 : max(65_536, backend.device.computeUnits * 4096)
        let output = try Tensor.empty([count], on: device)
        var iterations = 16
        var milliseconds = 0.0
        while true {
            let trial = try OpalBenchmarks.measure(on: device, warmup: 1, runs: 3) {
                try backend.peakMultiplyAdd(output.buffer, count: count, iterations: iterations, a: 0.999, b: 0.001)
            }
            milliseconds = trial.medianMilliseconds
            if milliseconds >= 20 || iterations >= 1 << 16 { break }
            iterations *= milliseconds > 0 ? max(2, min(16, Int((25 / milliseconds).rounded(.up)))) : 16
        }
        let fma = try OpalBenchmarks.measure(on: device, warmup: 1, runs: 7) {
            try backend.peakMultiplyAdd(output.buffer, count: count, iterations: iterations, a: 0.999, b: 0.001)
        }
        let flops = Double(count) * Double(iterations) * 256   // 8 float16 chains × 2
        var gigabytes = 0.0
        if bandwidth {
            let floats = Int(min(UInt64(64 << 20), backend.device.maxAllocationBytes / 2)) / 16 * 4
            let x = try Tensor.zeros([floats], on: device), y = try Tensor.empty([floats], on: device)
            let copy = try OpalBenchmarks.measure(on: device, warmup: 2, runs: 9) { try backend.peakCopy(x.buffer, y.buffer, count4: floats / 4) }
            gigabytes = Double(2 * 4 * floats) / (copy.medianMilliseconds * 1e6)
        }
        return (gigaflops(flops, milliseconds: fma.medianMilliseconds), gigabytes)
    }

    /// GFLOP/s of OpenBLAS SGEMM at n = 2048 (median of 5 after 2 warm-ups).
    static func measureSGEMM(on device: Device) throws -> Double {
        let n = 2048
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        let timing = try OpalBenchmarks.measure(on: device, warmup: 2, runs: 5) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, &c, Int32(n))
        }
        return gigaflops(2 * pow(Double(n), 3), milliseconds: timing.medianMilliseconds)
    }

    /// GB/s (read + write) of copying 256 MiB with one `memcpy` per processor, median of 7.
    static func measureMemcpy() -> Double {
        let bytes = 256 << 20
        let threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let target = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { source.deallocate(); target.deallocate() }
        memset(source, 1, bytes); memset(target, 0, bytes)
        let chunk = bytes / threads
        var samples: [Double] = []
        for run in 0..<9 {
            let started = DispatchTime.now().uptimeNanoseconds
            // Addresses as integers: raw pointers are not Sendable, and each thread touches its own chunk.
            let (from, to) = (Int(bitPattern: source), Int(bitPattern: target))
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let length = t == threads - 1 ? bytes - t * chunk : chunk
                memcpy(UnsafeMutableRawPointer(bitPattern: to + t * chunk)!, UnsafeRawPointer(bitPattern: from + t * chunk)!, length)
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            if run >= 2 { samples.append(Double(2 * bytes) / seconds / 1e9) }
        }
        return samples.sorted()[samples.count / 2]
    }
}
