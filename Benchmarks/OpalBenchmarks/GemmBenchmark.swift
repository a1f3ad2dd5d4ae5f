import CBLAS
import Foundation
import Opal
import OpalCPU
import OpalOpenCL

/// K1: square SGEMM. Opal's matmul (through the tensor API, with its allocator) against the
/// reference library called directly on pre-allocated buffers in the same run: CLBlast on
/// OpenCL devices, OpenBLAS on the native CPU. On OpenCL devices "opal" is Opal's own fast kernel
/// (`gemm_fast` in `Kernels/gemm.cl`, engine `.opal` whatever the device's default engine is), and
/// `ownKernel` times that kernel called directly on pre-allocated buffers (no allocation).
public struct GemmBenchmark {
    public struct Row: Sendable, Codable {
        public var size: Int
        public var flops: Double
        public var opal: Measurement
        public var reference: Measurement
        public var referenceName: String
        public var ownKernel: Measurement?
        public var opalGigaflops: Double { gigaflops(flops, milliseconds: opal.medianMilliseconds) }
        public var referenceGigaflops: Double { gigaflops(flops, milliseconds: reference.medianMilliseconds) }
        /// Reference time / Opal time (above 1: Opal is faster).
        public var speedup: Double { reference.medianMilliseconds / opal.medianMilliseconds }
    }

    public var sizes: [Int]
    public var runs: Int
    public init(sizes: [Int] = [256, 512, 1024, 2048], runs: Int = 20) { self.sizes = sizes; self.runs = runs }

    public func run(on device: Device, progress: (String) -> Void = { _ in }) throws -> [Row] {
        var rows: [Row] = []
        for (index, size) in sizes.enumerated() {
            progress("gemm \(size)×\(size)×\(size) on \(device.name)…")
            let a = try Tensor.uniform([size, size], in: -1...1, seed: 1, on: device)
            let b = try Tensor.uniform([size, size], in: -1...1, seed: 2, on: device)
            let c = try Tensor.zeros([size, size], on: device)
            let descriptor = GemmDescriptor(m: size, n: size, k: size)
            let flops = descriptor.flops
            // Large sizes off the GPU take seconds per run (CLBlast on PoCL: ~20 s at 4096): fewer runs there.
            let huge = size >= 4096 && device.kind != .gpu
            let runs = huge ? min(3, self.runs) : size >= 2048 && device.kind != .gpu ? max(5, self.runs / 4) : self.runs
            // The first size also pays for the library's one-time kernel compilation: warm up longer.
            let warmup = index == 0 ? 5 : huge ? 1 : 2
            let openCL = device.backend as? OpenCLBackend
            let defaultEngine = openCL?.gemmEngine
            openCL?.gemmEngine = .opal
            defer { if let defaultEngine { openCL?.gemmEngine = defaultEngine } }
            let opal = try measure(on: device, warmup: warmup, runs: runs) { _ = try Tensor.product(a, b) }
            var ownKernel: Measurement?
            let reference: Measurement
            let referenceName: String
            if let backend = openCL {
                referenceName = "CLBlast"
                reference = try measure(on: device, warmup: warmup, runs: runs) {
                    try backend.gemm(a.buffer, b.buffer, c.buffer, descriptor: descriptor, engine: .clblast)
                }
                ownKernel = try measure(on: device, warmup: 1, runs: max(3, runs / 2)) {
                    try backend.gemmWithOwnKernel(a.buffer, b.buffer, c.buffer, descriptor: descriptor)
                }
            } else {
                referenceName = "OpenBLAS"
                let hostA = try a.scalars(), hostB = try b.scalars()
                var hostC = [Float](repeating: 0, count: size * size)
                reference = try measure(on: device, warmup: 2, runs: runs) {
                    let n = Int32(size)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, hostA, n, hostB, n, 0, &hostC, n)
                }
            }
            rows.append(Row(size: size, flops: flops, opal: opal, reference: reference,
                            referenceName: referenceName, ownKernel: ownKernel))
        }
        return rows
    }
}
