import CCLBlast
import COpenCL
import Foundation
import OpalCore
import OpenCLKit

extension OpenCLBackend {
    /// Row-major batched GEMM (see `GemmDescriptor`) with the current `gemmEngine`.
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                     descriptor: GemmDescriptor) throws {
        try gemm(a, b, c, descriptor: descriptor, engine: gemmEngine)
    }

    /// Row-major batched GEMM with an explicit engine. `.clblast` falls back to Opal's kernel (with one
    /// note on stderr) when CLBlast reports an error, and keeps using Opal's kernel from then on.
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                     descriptor d: GemmDescriptor, engine: GemmEngine) throws {
        guard d.m >= 0, d.n >= 0, d.k >= 0, d.batch >= 0 else {
            throw TensorError.invalidArgument(op: "gemm", reason: "negative extent in \(d)")
        }
        let rowsA = d.transposeA ? d.k : d.m, columnsA = d.transposeA ? d.m : d.k
        let rowsB = d.transposeB ? d.n : d.k, columnsB = d.transposeB ? d.k : d.n
        guard d.lda >= columnsA, d.ldb >= columnsB, d.ldc >= d.n else {
            throw TensorError.invalidArgument(op: "gemm", reason: "leading dimensions too small in \(d)")
        }
        let left = try own(a, "gemm", elements: try span([d.batch, rowsA, columnsA], [d.strideA, d.lda, 1],
                                                         offset: d.offsetA))
        let right = try own(b, "gemm", elements: try span([d.batch, rowsB, columnsB], [d.strideB, d.ldb, 1],
                                                          offset: d.offsetB))
        let output = try own(c, "gemm", elements: try span([d.batch, d.m, d.n], [d.strideC, d.ldc, 1],
                                                           offset: d.offsetC))
        guard d.m > 0, d.n > 0, d.batch > 0 else { return }
        if engine == .clblast, d.k > 0, !clblastDisabled {
            let status = clblastGemm(left.buffer, right.buffer, output.buffer, d)
            if status == CLBlastSuccess.rawValue { return }
            noteCLBlastFailure(status: status)
        }
        try ownGemm(left.buffer, right.buffer, output.buffer, d)
    }

    /// Opal's tiled kernel (`Kernels/gemm.cl`), whatever `gemmEngine` says.
    public func gemmWithOwnKernel(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                                  descriptor: GemmDescriptor) throws {
        try gemm(a, b, c, descriptor: descriptor, engine: .opal)
    }

    private func ownGemm(_ a: CLBuffer, _ b: CLBuffer, _ c: CLBuffer, _ d: GemmDescriptor) throws {
        let tile = parameters.gemmTile
        try enqueue(.gemmTiled, [
            .int32(d.transposeA ? 1 : 0), .int32(d.transposeB ? 1 : 0), .int(d.m), .int(d.n), .int(d.k),
            .float(d.alpha), .float(d.beta),
            .buffer(a), .int(d.offsetA), .int(d.lda), .int(d.strideA),
            .buffer(b), .int(d.offsetB), .int(d.ldb), .int(d.strideB),
            .buffer(c), .int(d.offsetC), .int(d.ldc), .int(d.strideC),
        ], global: { _ in [roundUp(d.n, to: tile), roundUp(d.m, to: tile), d.batch] },
        local: { limit in
            guard tile * tile <= limit else {
                throw TensorError.device("gemm_tiled: \(tile)×\(tile) work-groups exceed the limit \(limit) of \(self.device.name)")
            }
            return [tile, tile, 1]
        })
    }

    /// Enqueues CLBlast's SGEMM (strided-batched when batch > 1); returns its CLBlastStatusCode.
    private func clblastGemm(_ a: CLBuffer, _ b: CLBuffer, _ c: CLBuffer, _ d: GemmDescriptor) -> Int32 {
        var rawQueue: cl_command_queue? = queue.raw
        let transposeA = d.transposeA ? CLBlastTransposeYes : CLBlastTransposeNo
        let transposeB = d.transposeB ? CLBlastTransposeYes : CLBlastTransposeNo
        let status: CLBlastStatusCode
        if d.batch == 1 {
            status = CLBlastSgemm(CLBlastLayoutRowMajor, transposeA, transposeB, d.m, d.n, d.k, d.alpha,
                                  a.raw, d.offsetA, d.lda, b.raw, d.offsetB, d.ldb, d.beta,
                                  c.raw, d.offsetC, d.ldc, &rawQueue, nil)
        } else {
            status = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, transposeA, transposeB, d.m, d.n, d.k, d.alpha,
                                                a.raw, d.offsetA, d.lda, d.strideA, b.raw, d.offsetB, d.ldb, d.strideB,
                                                d.beta, c.raw, d.offsetC, d.ldc, d.strideC, d.batch, &rawQueue, nil)
        }
        return status.rawValue
    }
}
