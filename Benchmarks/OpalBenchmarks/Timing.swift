import Foundation
import Opal
import OpalOpenCL
import OpenCLKit

/// Summary of repeated timings, in milliseconds.
public struct Measurement: Sendable, Codable {
    public var medianMilliseconds: Double
    public var p10Milliseconds: Double
    public var p90Milliseconds: Double
    public var runs: Int
    /// "opencl-events" (device time between profiling markers) or "wall-clock".
    public var clock: String

    public init(samples: [Double], clock: String) {
        let sorted = samples.sorted()
        func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(p * Double(sorted.count - 1) + 0.5))] }
        medianMilliseconds = percentile(0.5); p10Milliseconds = percentile(0.1); p90Milliseconds = percentile(0.9)
        runs = sorted.count; self.clock = clock
    }
}

/// The median of `values` (the upper middle one for an even count, as `Measurement` takes it); 0 when empty.
public func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

/// Times `body` on `device`: `warmup` untimed runs, then `runs` timed ones.
///
/// On OpenCL devices each run is bracketed by two profiling markers on the in-order queue and
/// its time is the device time between them (so host-side enqueue overhead only counts when the
/// device starves). On the native CPU, whose ops run synchronously, it is wall-clock time.
public func measure(on device: Device, warmup: Int = 5, runs: Int = 30,
                    _ body: () throws -> Void) throws -> Measurement {
    for _ in 0..<warmup { try body() }
    try device.synchronize()
    var samples: [Double] = []
    if let backend = device.backend as? OpenCLBackend, backend.queue.profiling {
        var usable = true
        for _ in 0..<runs {
            let start = try backend.queue.marker()
            try body()
            let end = try backend.queue.marker()
            try end.wait()
            do {
                let nanoseconds = try end.profilingNanoseconds(.end) - start.profilingNanoseconds(.end)
                samples.append(Double(nanoseconds) / 1e6)
            } catch {
                usable = false
                break
            }
        }
        if usable { return Measurement(samples: samples, clock: "opencl-events") }
        samples.removeAll()
    }
    for _ in 0..<runs {
        let started = DispatchTime.now().uptimeNanoseconds
        try body()
        try device.synchronize()
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
    }
    return Measurement(samples: samples, clock: "wall-clock")
}

/// GFLOP/s for `flops` floating-point operations done in `milliseconds`.
public func gigaflops(_ flops: Double, milliseconds: Double) -> Double { flops / (milliseconds * 1e6) }
