import CCLBlast
import COpenCL
import Foundation
import OpalCore
import OpenCLKit

extension OpenCLBackend {
    /// Row-major batched GEMM (see `GemmDescriptor`) with the current `gemmEngine`.
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                     descriptor: GemmDescriptor) throws {
        try gemm(a, b, c, descriptor: descriptor, epilogue: GemmEpilogue(), engine: gemmEngine)
    }

    /// GEMM with a fused epilogue, `C = activation(α·op(A)·op(B) + β·C + bias + residual)` (see
    /// `GemmEpilogue`), with the current `gemmEngine`.
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                     descriptor: GemmDescriptor, epilogue: GemmEpilogue) throws {
        try gemm(a, b, c, descriptor: descriptor, epilogue: epilogue, engine: gemmEngine)
    }

    /// Row-major batched GEMM with an explicit engine.
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                     descriptor: GemmDescriptor, engine: GemmEngine) throws {
        try gemm(a, b, c, descriptor: descriptor, epilogue: GemmEpilogue(), engine: engine)
    }

    /// GEMM with a fused epilogue and an explicit engine. `.opal` runs `gemm_fast` (epilogue fused);
    /// `.clblast` runs CLBlast's SGEMM and then one `gemm_epilogue` pass (none when the epilogue is
    /// empty), and falls back to `.opal` (with one note on stderr, for good) when CLBlast reports an error.
    public func gemm(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                     descriptor d: GemmDescriptor, epilogue: GemmEpilogue, engine: GemmEngine) throws {
        let operands = try gemmOperands(a, b, c, d, epilogue)
        guard d.m > 0, d.n > 0, d.batch > 0 else { return }
        if engine == .clblast, d.k > 0, !clblastDisabled {
            let status = clblastGemm(operands.a, operands.b, operands.c, d)
            if status == CLBlastSuccess.rawValue {
                if !epilogue.isEmpty { try gemmEpilogue(operands, d, epilogue) }
                return
            }
            noteCLBlastFailure(status: status)
        }
        try fastGemm(operands, d, epilogue)
    }

    /// Opal's fast kernel (`gemm_fast` in `Kernels/gemm.cl`), whatever `gemmEngine` says.
    public func gemmWithOwnKernel(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                                  descriptor: GemmDescriptor) throws {
        try gemm(a, b, c, descriptor: descriptor, epilogue: GemmEpilogue(), engine: .opal)
    }

    /// The simple tiled reference kernel (`gemm_tiled`), for tests: one work-item per element of C.
    public func gemmWithReferenceKernel(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                                        descriptor d: GemmDescriptor) throws {
        let operands = try gemmOperands(a, b, c, d, GemmEpilogue())
        guard d.m > 0, d.n > 0, d.batch > 0 else { return }
        let tile = parameters.gemmTile
        try enqueue(.gemmTiled, [
            .int32(d.transposeA ? 1 : 0), .int32(d.transposeB ? 1 : 0), .int(d.m), .int(d.n), .int(d.k),
            .float(d.alpha), .float(d.beta),
            .buffer(operands.a), .int(d.offsetA), .int(d.lda), .int(d.strideA),
            .buffer(operands.b), .int(d.offsetB), .int(d.ldb), .int(d.strideB),
            .buffer(operands.c), .int(d.offsetC), .int(d.ldc), .int(d.strideC),
        ], global: { _ in [roundUp(d.n, to: tile), roundUp(d.m, to: tile), d.batch] },
        local: { limit in
            guard tile * tile <= limit else {
                throw TensorError.device("gemm_tiled: \(tile)×\(tile) work-groups exceed the limit \(limit) of \(self.device.name)")
            }
            return [tile, tile, 1]
        })
    }

    /// The fast kernel's tile sizes on this device (from the table in KernelParameters.swift).
    public var gemmParameters: GemmParameters { parameters.gemm }

    // MARK: Implementation

    /// The checked buffers of one GEMM call (the epilogue's absent buffers are nil).
    struct GemmOperands {
        var a: CLBuffer, b: CLBuffer, c: CLBuffer
        var bias: CLBuffer?, residual: CLBuffer?
        /// B as given (the packing copy takes a `DeviceBuffer`).
        var deviceB: any DeviceBuffer
    }

    private func gemmOperands(_ a: any DeviceBuffer, _ b: any DeviceBuffer, _ c: any DeviceBuffer,
                              _ d: GemmDescriptor, _ epilogue: GemmEpilogue) throws -> GemmOperands {
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
        let outputElements = try span([d.batch, d.m, d.n], [d.strideC, d.ldc, 1], offset: d.offsetC)
        let output = try own(c, "gemm", elements: outputElements)
        let bias = try epilogue.bias.map { try own($0, "gemm bias", elements: epilogue.biasPerRow ? d.m : d.n) }
        let residual = try epilogue.residual.map { try own($0, "gemm residual", elements: outputElements) }
        return GemmOperands(a: left.buffer, b: right.buffer, c: output.buffer, bias: bias?.buffer,
                            residual: residual?.buffer, deviceB: right)
    }

    /// The epilogue's kernel arguments: bias, bias mode, residual, residual flag, activation code and its
    /// parameters. Absent buffers are replaced by C (never read: the flags say so).
    private func epilogueArguments(_ operands: GemmOperands, _ epilogue: GemmEpilogue) -> [KernelArgument] {
        let code = epilogue.activation?.kernelCode ?? (op: 0, a: 0, b: 0)
        return [
            .buffer(operands.bias ?? operands.c), .int32(operands.bias == nil ? 0 : epilogue.biasPerRow ? 2 : 1),
            .buffer(operands.residual ?? operands.c), .int32(operands.residual == nil ? 0 : 1),
            .int32(code.op), .float(code.a), .float(code.b),
        ]
    }

    private func fastGemm(_ operands: GemmOperands, _ d: GemmDescriptor, _ epilogue: GemmEpilogue) throws {
        let tiles = parameters.gemm
        var d = d, right = operands.b
        var packed: (any DeviceBuffer)?
        if d.transposeB && !tiles.stagesThroughLocalMemory && d.k > 0 {
            // The direct-read kernel wants op(B) as stored: pack op(B)_b into [batch, k, n] first
            // (O(k·n) next to the product's O(m·n·k); the pool recycles the scratch buffer).
            let scratch = try allocate(count: d.batch * d.k * d.n)
            let packedB = try own(scratch, "gemm", elements: d.batch * d.k * d.n).buffer
            // B is stored [n, k] (row stride ldb): its transpose is op(B) = [k, n].
            try transposeMatrices(operands.b, offset: d.offsetB, leadingDimension: d.ldb, batchStride: d.strideB,
                                  rows: d.n, columns: d.k, batch: d.batch, into: packedB)
            right = packedB
            packed = scratch
            d.transposeB = false; d.offsetB = 0; d.ldb = d.n; d.strideB = d.k * d.n
        }
        defer { withExtendedLifetime(packed) {} }
        let group = tiles.workGroup
        try enqueue(.gemmFast, [
            .int32(d.transposeA ? 1 : 0), .int32(d.transposeB ? 1 : 0), .int(d.m), .int(d.n), .int(d.k),
            .float(d.alpha), .float(d.beta),
            .buffer(operands.a), .int(d.offsetA), .int(d.lda), .int(d.strideA),
            .buffer(right), .int(d.offsetB), .int(d.ldb), .int(d.strideB),
            .buffer(operands.c), .int(d.offsetC), .int(d.ldc), .int(d.strideC),
        ] + epilogueArguments(operands, epilogue),
        global: { _ in
            [(d.n + tiles.tileN - 1) / tiles.tileN * group[0], (d.m + tiles.tileM - 1) / tiles.tileM * group[1], d.batch]
        },
        local: { limit in
            guard group[0] * group[1] <= limit else {
                throw TensorError.device("gemm_fast: \(group[0])×\(group[1]) work-groups exceed the limit \(limit) of \(self.device.name)")
            }
            return [group[0], group[1], 1]
        })
    }

    /// `C = activation(C + bias + residual)` in place, after CLBlast.
    private func gemmEpilogue(_ operands: GemmOperands, _ d: GemmDescriptor, _ epilogue: GemmEpilogue) throws {
        let count = d.batch * d.m * d.n
        try launch(.gemmEpilogue, [
            .int(d.m), .int(d.n), .int(d.batch), .float(1),
            .buffer(operands.c), .int(d.offsetC), .int(d.ldc), .int(d.strideC),
        ] + epilogueArguments(operands, epilogue), count: count)
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

extension OpenCLBackend {
    /// `destination[b][c][r] = source[offset + b·batchStride + r·leadingDimension + c]` for r < rows,
    /// c < columns: each matrix of a batch transposed into packed [columns, rows] (`transpose_tiled`).
    func transposeMatrices(_ source: CLBuffer, offset: Int, leadingDimension: Int, batchStride: Int, rows: Int,
                           columns: Int, batch: Int, into destination: CLBuffer) throws {
        guard rows > 0, columns > 0, batch > 0 else { return }
        let tile = 16   // TT in Kernels/elementwise.cl
        try enqueue(.transposeTiled, [
            .buffer(source), .int(offset), .int(leadingDimension), .int(batchStride),
            .buffer(destination), .int(rows), .int(columns),
        ], global: { _ in [roundUp(columns, to: tile), roundUp(rows, to: tile), batch] },
        local: { limit in
            guard tile * tile <= limit else {
                throw TensorError.device("transpose_tiled: \(tile)×\(tile) work-groups exceed the limit \(limit) of \(self.device.name)")
            }
            return [tile, tile, 1]
        })
    }
}
