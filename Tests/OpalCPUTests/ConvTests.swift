import CVectorMath
import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// Convolution on the CPU backend (im2col + OpenBLAS, Sources/OpalCPU/Conv.swift) against the direct
/// Double references beside it, plus a hand-computed case and finite-difference checks of both backward
/// passes against the forward.
final class ConvTests: CPUTestCase {
    /// The shape grid: odd sizes, strides, padding 0/1/3, dilation, groups, 1×1 and 5×5 kernels, batch 1 and 3.
    static let grid: [Conv2DDescriptor] = [
        Conv2DDescriptor(batch: 1, inputChannels: 1, inputHeight: 7, inputWidth: 9, outputChannels: 1,
                         kernelHeight: 3, kernelWidth: 3),
        Conv2DDescriptor(batch: 3, inputChannels: 3, inputHeight: 13, inputWidth: 5, outputChannels: 5,
                         kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1),
        Conv2DDescriptor(batch: 3, inputChannels: 4, inputHeight: 9, inputWidth: 11, outputChannels: 6,
                         kernelHeight: 3, kernelWidth: 2, strideHeight: 2, strideWidth: 2,
                         paddingHeight: 1, paddingWidth: 0, groups: 2),
        Conv2DDescriptor(batch: 1, inputChannels: 5, inputHeight: 12, inputWidth: 10, outputChannels: 7,
                         kernelHeight: 3, kernelWidth: 3, paddingHeight: 3, paddingWidth: 3,
                         dilationHeight: 2, dilationWidth: 2),
        Conv2DDescriptor(batch: 3, inputChannels: 6, inputHeight: 7, inputWidth: 9, outputChannels: 9,
                         kernelHeight: 1, kernelWidth: 1),
        Conv2DDescriptor(batch: 3, inputChannels: 6, inputHeight: 7, inputWidth: 9, outputChannels: 4,
                         kernelHeight: 1, kernelWidth: 1, strideHeight: 2, strideWidth: 3),
        Conv2DDescriptor(batch: 3, inputChannels: 3, inputHeight: 13, inputWidth: 11, outputChannels: 33,
                         kernelHeight: 5, kernelWidth: 5, strideHeight: 2, strideWidth: 1,
                         paddingHeight: 2, paddingWidth: 3),
        Conv2DDescriptor(batch: 2, inputChannels: 4, inputHeight: 6, inputWidth: 7, outputChannels: 4,
                         kernelHeight: 3, kernelWidth: 3, strideHeight: 3, strideWidth: 2, paddingHeight: 1,
                         paddingWidth: 1, dilationHeight: 2, dilationWidth: 1, groups: 4),
        // "Same" convolutions (stride 1, oW = W: the contiguous im2col/col2im rows) with two padding columns on
        // each side, an odd width, and a width of 1 where most taps have no valid column at all.
        Conv2DDescriptor(batch: 2, inputChannels: 3, inputHeight: 6, inputWidth: 7, outputChannels: 5,
                         kernelHeight: 5, kernelWidth: 5, paddingHeight: 2, paddingWidth: 2),
        Conv2DDescriptor(batch: 3, inputChannels: 2, inputHeight: 5, inputWidth: 1, outputChannels: 3,
                         kernelHeight: 5, kernelWidth: 5, paddingHeight: 2, paddingWidth: 2),
        // Strided taps as windows of phase planes: DCGAN's 4×4 stride 2 (phases exactly as wide as the output:
        // contiguous rows), a 2×2 kernel at stride 3 (phases no tap reads) with padding 4 (taps whose window
        // misses the plane entirely), and stride 2 with dilation 3 on an odd width.
        Conv2DDescriptor(batch: 2, inputChannels: 3, inputHeight: 14, inputWidth: 14, outputChannels: 4,
                         kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2,
                         paddingHeight: 1, paddingWidth: 1),
        Conv2DDescriptor(batch: 2, inputChannels: 2, inputHeight: 8, inputWidth: 10, outputChannels: 3,
                         kernelHeight: 2, kernelWidth: 2, strideHeight: 3, strideWidth: 3,
                         paddingHeight: 4, paddingWidth: 4),
        Conv2DDescriptor(batch: 1, inputChannels: 2, inputHeight: 11, inputWidth: 13, outputChannels: 3,
                         kernelHeight: 3, kernelWidth: 2, strideHeight: 2, strideWidth: 2,
                         paddingHeight: 2, paddingWidth: 1, dilationHeight: 3, dilationWidth: 3),
        // Contiguous shapes wider than the vector kernels' blocks: a 4×4 stride-2 layer on a 70-wide plane
        // (three 32-float blocks per row when splitting into phases, 630 positions: 40 mask words per tap)
        // and a "same" 3×3 on a 40-wide plane.
        Conv2DDescriptor(batch: 2, inputChannels: 2, inputHeight: 37, inputWidth: 70, outputChannels: 3,
                         kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2,
                         paddingHeight: 1, paddingWidth: 1),
        Conv2DDescriptor(batch: 2, inputChannels: 2, inputHeight: 9, inputWidth: 40, outputChannels: 3,
                         kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1),
        // DCGAN's 4×4 stride 2 with at least 64 rows of col (K = Cg·16), where the backward weight pass runs
        // as an implicit GEMM too: 13 output channels (a partial 12-row panel), and 2 groups of 4 channels.
        Conv2DDescriptor(batch: 3, inputChannels: 5, inputHeight: 14, inputWidth: 14, outputChannels: 13,
                         kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2,
                         paddingHeight: 1, paddingWidth: 1),
        Conv2DDescriptor(batch: 3, inputChannels: 8, inputHeight: 12, inputWidth: 14, outputChannels: 26,
                         kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2,
                         paddingHeight: 1, paddingWidth: 1, groups: 2),
        // A 1×1 kernel deep enough for the packed GEMM, which then reads x and writes dx directly (no columns).
        Conv2DDescriptor(batch: 3, inputChannels: 70, inputHeight: 5, inputWidth: 7, outputChannels: 9,
                         kernelHeight: 1, kernelWidth: 1),
        // A "same" 9×9 kernel: 81 taps, more than the implicit GEMM's tiles track (the column matrix serves).
        Conv2DDescriptor(batch: 2, inputChannels: 2, inputHeight: 10, inputWidth: 11, outputChannels: 13,
                         kernelHeight: 9, kernelWidth: 9, paddingHeight: 4, paddingWidth: 4),
        // Planes of 1024 positions or more, where the AVX-512 im2col copies each tap's run with memcpy.
        Conv2DDescriptor(batch: 1, inputChannels: 2, inputHeight: 33, inputWidth: 40, outputChannels: 3,
                         kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1),
        Conv2DDescriptor(batch: 1, inputChannels: 2, inputHeight: 64, inputWidth: 70, outputChannels: 2,
                         kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2,
                         paddingHeight: 1, paddingWidth: 1),
    ]

    static func magnitude(_ values: [Double]) -> Double { values.lazy.map(Swift.abs).max() ?? 0 }

    func testForwardMatchesReference() throws {
        for (index, d) in ConvTests.grid.enumerated() {
            for withBias in [index.isMultiple(of: 2), !index.isMultiple(of: 2)] {
                let x = uniform(d.inputCount), w = uniform(d.weightCount)
                let bias = withBias ? uniform(d.outputChannels) : nil
                let y = try poisoned(d.outputCount)
                try backend.conv2D(try buffer(x), try buffer(w), try bias.map { try buffer($0) }, y, descriptor: d)
                let expected = CPUBackend.referenceConv2D(x, w, bias, descriptor: d)
                let scale = CPUBackend.referenceConv2D(x.map(abs), w.map(abs), bias?.map(abs), descriptor: d)
                try assertWithin(try read(y), expected, scale: scale, "forward \(d) bias \(withBias)")
            }
        }
    }

    func testBackwardDataMatchesReference() throws {
        for d in ConvTests.grid {
            let dy = uniform(d.outputCount), w = uniform(d.weightCount)
            let dx = try poisoned(d.inputCount)
            try backend.conv2DBackwardData(try buffer(dy), try buffer(w), dx, descriptor: d)
            let expected = CPUBackend.referenceConv2DBackwardData(dy, w, descriptor: d)
            let scale = CPUBackend.referenceConv2DBackwardData(dy.map(abs), w.map(abs), descriptor: d)
            try assertWithin(try read(dx), expected, scale: scale, "backward data \(d)")
        }
    }

    func testBackwardWeightMatchesReference() throws {
        for d in ConvTests.grid {
            let x = uniform(d.inputCount), dy = uniform(d.outputCount)
            let dw = try poisoned(d.weightCount)
            try backend.conv2DBackwardWeight(try buffer(x), try buffer(dy), dw, descriptor: d)
            let expected = CPUBackend.referenceConv2DBackwardWeight(x, dy, descriptor: d)
            let scale = CPUBackend.referenceConv2DBackwardWeight(x.map(abs), dy.map(abs), descriptor: d)
            try assertWithin(try read(dw), expected, scale: scale, "backward weight \(d)")
        }
    }

    /// im2col and col2im have a scalar, an AVX2 (gathers) and an AVX-512 (contiguous windows) version in
    /// CVectorMath, and with AVX-512 the packed GEMM serves deep products on small planes unless the
    /// OpenBLAS engine is chosen; every version and engine this processor has runs the grid's three passes
    /// against the references.
    func testEveryVectorVersionMatchesReference() throws {
        let supported = opal_gather_level()
        defer { opal_gather_limit_level(supported); backend.convolutionEngine = .automatic }
        var versions: [(level: Int32, engine: CPUConvolutionEngine)] = (0...supported).map { ($0, .automatic) }
        if supported == 2 { versions.append((2, .openBLAS)) }
        for (level, engine) in versions {
            opal_gather_limit_level(level)
            backend.convolutionEngine = engine
            XCTAssertEqual(opal_gather_level(), level)
            for d in ConvTests.grid {
                let x = uniform(d.inputCount), w = uniform(d.weightCount), dy = uniform(d.outputCount)
                let y = try poisoned(d.outputCount), dx = try poisoned(d.inputCount), dw = try poisoned(d.weightCount)
                try backend.conv2D(try buffer(x), try buffer(w), nil, y, descriptor: d)
                try backend.conv2DBackwardData(try buffer(dy), try buffer(w), dx, descriptor: d)
                try backend.conv2DBackwardWeight(try buffer(x), try buffer(dy), dw, descriptor: d)
                try assertWithin(try read(y), CPUBackend.referenceConv2D(x, w, nil, descriptor: d),
                                 scale: CPUBackend.referenceConv2D(x.map(abs), w.map(abs), nil, descriptor: d),
                                 "level \(level) \(engine) forward \(d)")
                try assertWithin(try read(dx), CPUBackend.referenceConv2DBackwardData(dy, w, descriptor: d),
                                 scale: CPUBackend.referenceConv2DBackwardData(dy.map(abs), w.map(abs), descriptor: d),
                                 "level \(level) \(engine) backward data \(d)")
                try assertWithin(try read(dw), CPUBackend.referenceConv2DBackwardWeight(x, dy, descriptor: d),
                                 scale: CPUBackend.referenceConv2DBackwardWeight(x.map(abs), dy.map(abs), descriptor: d),
                                 "level \(level) \(engine) backward weight \(d)")
            }
        }
    }

    /// The algorithm each pass reports, by shape and engine (the names `opal bench conv` prints).
    func testAlgorithmNames() throws {
        defer { backend.convolutionEngine = .automatic }
        let dcgan = Conv2DDescriptor(batch: 4, inputChannels: 64, inputHeight: 14, inputWidth: 14, outputChannels: 128,
                                     kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2,
                                     paddingHeight: 1, paddingWidth: 1)
        let shallow = Conv2DDescriptor(batch: 4, inputChannels: 1, inputHeight: 28, inputWidth: 28, outputChannels: 32,
                                       kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1)
        let large = Conv2DDescriptor(batch: 1, inputChannels: 64, inputHeight: 56, inputWidth: 56, outputChannels: 64,
                                     kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1)
        let packed = opal_packed_gemm_available() != 0
        XCTAssertEqual(backend.convolutionAlgorithm(dcgan), packed ? "implicit GEMM" : "im2col + OpenBLAS")
        XCTAssertEqual(backend.convolutionAlgorithm(dcgan, backwardWeight: true), packed ? "implicit GEMM" : "im2col + OpenBLAS")
        XCTAssertEqual(backend.convolutionAlgorithm(shallow), "im2col + OpenBLAS", "K = 9: below the packed GEMM's depth")
        XCTAssertEqual(backend.convolutionAlgorithm(large), "im2col + OpenBLAS", "3136 positions: OpenBLAS's wide GEMMs")
        backend.convolutionEngine = .openBLAS
        XCTAssertEqual(backend.convolutionAlgorithm(dcgan), "im2col + OpenBLAS")
    }

    /// A column budget small enough that the batch is split into chunks of 2 (and backward-weight
    /// accumulates across them); 1×1 kernels never chunk.
    func testChunkedBatch() throws {
        let d = Conv2DDescriptor(batch: 5, inputChannels: 3, inputHeight: 9, inputWidth: 7, outputChannels: 4,
                                 kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1, groups: 1)
        let budget = 2 * d.inputChannels * 9 * d.outputHeight * d.outputWidth + 1
        XCTAssertEqual(try ConvolutionPlan(d, op: "test", columnBudget: budget).chunk, 2)
        let x = uniform(d.inputCount), w = uniform(d.weightCount), dy = uniform(d.outputCount)
        let bias = uniform(d.outputChannels)
        let y = try poisoned(d.outputCount), dx = try poisoned(d.inputCount), dw = try poisoned(d.weightCount)
        try backend.conv2D(try buffer(x), try buffer(w), try buffer(bias), y, descriptor: d, columnBudget: budget)
        try backend.conv2DBackwardData(try buffer(dy), try buffer(w), dx, descriptor: d, columnBudget: budget)
        try backend.conv2DBackwardWeight(try buffer(x), try buffer(dy), dw, descriptor: d, columnBudget: budget)
        try assertWithin(try read(y), CPUBackend.referenceConv2D(x, w, bias, descriptor: d),
                         scale: CPUBackend.referenceConv2D(x.map(abs), w.map(abs), bias.map(abs), descriptor: d),
                         "chunked forward")
        try assertWithin(try read(dx), CPUBackend.referenceConv2DBackwardData(dy, w, descriptor: d),
                         scale: CPUBackend.referenceConv2DBackwardData(dy.map(abs), w.map(abs), descriptor: d),
                         "chunked backward data")
        try assertWithin(try read(dw), CPUBackend.referenceConv2DBackwardWeight(x, dy, descriptor: d),
                         scale: CPUBackend.referenceConv2DBackwardWeight(x.map(abs), dy.map(abs), descriptor: d),
                         "chunked backward weight")
    }

    /// The batch-split path (several workers taking chunks from a shared counter, single-threaded BLAS) against
    /// the references, with column budgets that force one element per chunk, a few, and the default: the
    /// "same" stride-1 convolution (contiguous-rows im2col, also dilated), the DCGAN 4×4 stride-2 geometry,
    /// 1×1 kernels, groups and odd batch sizes (uneven last chunk).
    func testBatchSplitWorkersMatchReference() throws {
        let shapes = ConvTests.grid + [
            Conv2DDescriptor(batch: 7, inputChannels: 3, inputHeight: 9, inputWidth: 11, outputChannels: 5,
                             kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1),
            Conv2DDescriptor(batch: 5, inputChannels: 2, inputHeight: 10, inputWidth: 9, outputChannels: 3,
                             kernelHeight: 3, kernelWidth: 3, paddingHeight: 2, paddingWidth: 2,
                             dilationHeight: 2, dilationWidth: 2),
            Conv2DDescriptor(batch: 6, inputChannels: 4, inputHeight: 10, inputWidth: 10, outputChannels: 6,
                             kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2,
                             paddingHeight: 1, paddingWidth: 1),
            Conv2DDescriptor(batch: 5, inputChannels: 6, inputHeight: 5, inputWidth: 7, outputChannels: 4,
                             kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1, groups: 2),
        ]
        for d in shapes {
            let perElement = d.inputChannels * d.kernelHeight * d.kernelWidth * d.outputHeight * d.outputWidth
            for (workers, budget) in [(2, 1), (3, 2 * perElement + 1), (2, ConvolutionPlan.maximumColumnElements)] {
                let plan = try ConvolutionPlan(d, op: "test", columnBudget: budget, threads: 1, workers: workers)
                XCTAssertEqual(plan.workers, min(workers, d.batch), context("workers \(d)"))
                let x = uniform(d.inputCount), w = uniform(d.weightCount), dy = uniform(d.outputCount)
                let bias = uniform(d.outputChannels)
                let y = try poisoned(d.outputCount), dx = try poisoned(d.inputCount), dw = try poisoned(d.weightCount)
                try backend.conv2D(try buffer(x), try buffer(w), try buffer(bias), y, descriptor: d,
                                   columnBudget: budget, workers: workers)
                try backend.conv2DBackwardData(try buffer(dy), try buffer(w), dx, descriptor: d,
                                               columnBudget: budget, workers: workers)
                try backend.conv2DBackwardWeight(try buffer(x), try buffer(dy), dw, descriptor: d,
                                                 columnBudget: budget, workers: workers)
                let label = "\(workers) workers, chunk \(plan.chunk), \(d)"
                try assertWithin(try read(y), CPUBackend.referenceConv2D(x, w, bias, descriptor: d),
                                 scale: CPUBackend.referenceConv2D(x.map(abs), w.map(abs), bias.map(abs), descriptor: d),
                                 "split forward \(label)")
                try assertWithin(try read(dx), CPUBackend.referenceConv2DBackwardData(dy, w, descriptor: d),
                                 scale: CPUBackend.referenceConv2DBackwardData(dy.map(abs), w.map(abs), descriptor: d),
                                 "split backward data \(label)")
                try assertWithin(try read(dw), CPUBackend.referenceConv2DBackwardWeight(x, dy, descriptor: d),
                                 scale: CPUBackend.referenceConv2DBackwardWeight(x.map(abs), dy.map(abs), descriptor: d),
                                 "split backward weight \(label)")
            }
        }
    }

    /// The plan splits the batch over the cores only when every core gets an element, and then keeps chunks
    /// within a worker's cache budget and at most a quarter of a worker's share of the batch.
    func testPlanSplitsLargeBatches() throws {
        let d = Conv2DDescriptor(batch: 64, inputChannels: 32, inputHeight: 14, inputWidth: 14, outputChannels: 64,
                                 kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1)
        let plan = try ConvolutionPlan(d, op: "test", threads: 2)
        XCTAssertEqual(plan.workers, 2)
        XCTAssertLessThanOrEqual(plan.columnCount, ConvolutionPlan.workerColumnElements)
        XCTAssertLessThanOrEqual(plan.chunk, 8)
        var single = d
        single.batch = 1
        XCTAssertEqual(try ConvolutionPlan(single, op: "test", threads: 2).workers, 1)
        XCTAssertEqual(try ConvolutionPlan(d, op: "test", threads: 1).workers, 1)
    }

    /// x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], w = [[1, 0], [0, −1]], bias 0.5, no padding:
    /// y[i, j] = x[i, j] − x[i + 1, j + 1] + 0.5 = −3.5 everywhere; dx for dy = ones is +1 where only
    /// w[0, 0] reaches and −1 where only w[1, 1] does; dw for dy = [[1, 0], [0, 2]] is x[kh, kw] + 2·x[kh + 1, kw + 1].
    func testHandComputedTwoByTwo() throws {
        let d = Conv2DDescriptor(batch: 1, inputChannels: 1, inputHeight: 3, inputWidth: 3, outputChannels: 1,
                                 kernelHeight: 2, kernelWidth: 2)
        let x: [Float] = [1, 2, 3, 4, 5, 6, 7, 8, 9], w: [Float] = [1, 0, 0, -1]
        let y = try poisoned(4)
        try backend.conv2D(try buffer(x), try buffer(w), try buffer([0.5]), y, descriptor: d)
        XCTAssertEqual(try read(y), [-3.5, -3.5, -3.5, -3.5] as [Float])
        let dx = try poisoned(9)
        try backend.conv2DBackwardData(try buffer([1, 1, 1, 1]), try buffer(w), dx, descriptor: d)
        XCTAssertEqual(try read(dx), [1, 1, 0, 1, 0, -1, 0, -1, -1] as [Float])
        let dw = try poisoned(4)
        try backend.conv2DBackwardWeight(try buffer(x), try buffer([1, 0, 0, 2]), dw, descriptor: d)
        // dw[kh, kw] = Σ dy[oh, ow]·x[oh + kh, ow + kw] = x[kh, kw] + 2·x[kh + 1, kw + 1]
        XCTAssertEqual(try read(dw), [11, 14, 20, 23] as [Float])
    }

    /// L(x, w) = Σ r ⊙ conv2D(x, w) is linear in x and in w, so the central difference
    /// (L(x + h·e_i) − L(x − h·e_i)) / (x_i⁺ − x_i⁻), computed in Double from the reference forward, is
    /// the exact gradient up to Double rounding; the backward passes must match it.
    func testBackwardPassesAgainstFiniteDifferences() throws {
        let shapes = [
            Conv2DDescriptor(batch: 2, inputChannels: 2, inputHeight: 5, inputWidth: 6, outputChannels: 3,
                             kernelHeight: 3, kernelWidth: 2, strideHeight: 2, strideWidth: 1,
                             paddingHeight: 1, paddingWidth: 1),
            Conv2DDescriptor(batch: 1, inputChannels: 4, inputHeight: 6, inputWidth: 5, outputChannels: 2,
                             kernelHeight: 2, kernelWidth: 3, paddingHeight: 2, paddingWidth: 0,
                             dilationHeight: 2, dilationWidth: 1, groups: 2),
        ]
        for d in shapes {
            let x = uniform(d.inputCount), w = uniform(d.weightCount), r = uniform(d.outputCount)
            func loss(_ x: [Float], _ w: [Float]) -> Double {
                zip(CPUBackend.referenceConv2D(x, w, nil, descriptor: d), r).reduce(0) { $0 + $1.0 * Double($1.1) }
            }
            func difference(_ values: [Float], at index: Int, _ evaluate: ([Float]) -> Double) -> Double {
                var plus = values, minus = values
                plus[index] += 0.25; minus[index] -= 0.25
                return (evaluate(plus) - evaluate(minus)) / Double(plus[index] - minus[index])
            }
            let dx = try poisoned(d.inputCount), dw = try poisoned(d.weightCount)
            try backend.conv2DBackwardData(try buffer(r), try buffer(w), dx, descriptor: d)
            try backend.conv2DBackwardWeight(try buffer(x), try buffer(r), dw, descriptor: d)
            let numericX = x.indices.map { difference(x, at: $0) { loss($0, w) } }
            let numericW = w.indices.map { difference(w, at: $0) { loss(x, $0) } }
            assertClose(try read(dx), numericX, relative: 1e-4, absolute: 1e-5, "finite-difference dx \(d)")
            assertClose(try read(dw), numericW, relative: 1e-4, absolute: 1e-5, "finite-difference dw \(d)")
        }
    }

    func testInvalidGeometryAndShortBuffersThrow() throws {
        let bad = Conv2DDescriptor(batch: 1, inputChannels: 3, inputHeight: 4, inputWidth: 4, outputChannels: 4,
                                   kernelHeight: 3, kernelWidth: 3, groups: 2)
        let buffer = try poisoned(256)
        XCTAssertThrowsError(try backend.conv2D(buffer, buffer, nil, buffer, descriptor: bad))
        let d = Conv2DDescriptor(batch: 1, inputChannels: 2, inputHeight: 4, inputWidth: 4, outputChannels: 2,
                                 kernelHeight: 3, kernelWidth: 3)
        XCTAssertThrowsError(try backend.conv2D(try poisoned(d.inputCount - 1), try poisoned(d.weightCount), nil,
                                                try poisoned(d.outputCount), descriptor: d))
        XCTAssertThrowsError(try backend.conv2DBackwardWeight(try poisoned(d.inputCount), try poisoned(d.outputCount),
                                                              ForeignBuffer(), descriptor: d))
    }

    /// |actual − expected| ≤ 1e-5·scale + 1e-6·max(scale) per element, where scale is the reference evaluated
    /// on magnitudes (Σ|terms|), the bound of float rounding in a sum of that many terms.
    func assertWithin(_ actual: [Float], _ expected: [Double], scale: [Double], _ message: String,
                      file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(actual.count, expected.count, context("\(message): count"), file: file, line: line)
        let largest = ConvTests.magnitude(scale)
        var failures = 0
        for index in expected.indices {
            let bound = 1e-5 * scale[index] + 1e-6 * largest
            if !(Swift.abs(Double(actual[index]) - expected[index]) <= bound) {
                failures += 1
                if failures <= 3 {
                    XCTFail(context("\(message): element \(index) is \(actual[index]), expected \(expected[index])"),
                            file: file, line: line)
                }
            }
        }
        if failures > 3 { XCTFail(context("\(message): \(failures) elements differ"), file: file, line: line) }
    }
}
