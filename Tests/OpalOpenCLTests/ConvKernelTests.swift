import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Convolution on the OpenCL backend (Kernels/conv.cl: im2col + GEMM + scatter, the implicit-GEMM
/// forward kernels, gather + GEMM + col2im, im2col + GEMM and the implicit kernel for the weights) against
/// CPUBackend, whose own fast path is tested against the direct Double reference in
/// Tests/OpalCPUTests/ConvTests.swift.
final class ConvKernelTests: KernelTestCase {
    private var savedEngine = OpenCLBackend.GemmEngine.clblast

    /// Under oclgrind (OPAL_TEST_SMALL) the im2col paths use Opal's own GEMM kernel, as GemmKernelTests do:
    /// CLBlast's kernels are not ours to check and compile far too slowly in the interpreter.
    override func setUpWithError() throws {
        try super.setUpWithError()
        savedEngine = gpu.gemmEngine
        if small { gpu.gemmEngine = .opal }
    }

    override func tearDownWithError() throws {
        gpu?.gemmEngine = savedEngine
        try super.tearDownWithError()
    }

    /// `pair` whose device buffer is kept until the test ends (in `retained`), as is `poisonedPair`'s below:
    /// oclgrind 21.10's --uninitialized check gives a buffer, at each host write into it, a fresh shadow
    /// exactly as long as that write; kernel stores past it are not tracked and later loads there read as
    /// uninitialised. The pool hands out buffers of whole size classes, so an input written with n floats
    /// and recycled mid-test as a longer scratch (col, the GEMM product, gathered dy) would report that
    /// scratch's tail, though kernels wrote it (seen as reports in conv_scatter and in gemm_fast's tile loads).
    override func pair(_ values: [Float]) throws -> (gpu: any DeviceBuffer, cpu: any DeviceBuffer) {
        let buffers = try super.pair(values)
        retained.append(buffers.gpu)
        return buffers
    }

    override func poisonedPair(_ count: Int) throws -> (gpu: any DeviceBuffer, cpu: any DeviceBuffer) {
        let buffers = try super.poisonedPair(count)
        retained.append(buffers.gpu)
        return buffers
    }

    /// Odd sizes, stride 2, padding 0/1/3, dilation 2, groups 2, batch 1 and 3, channel counts that are
    /// not multiples of the tiles, 1×1 and 5×5 kernels. Under OPAL_TEST_SMALL (oclgrind) a tiny subset.
    var grid: [Conv2DDescriptor] {
        let all = [
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
            Conv2DDescriptor(batch: 3, inputChannels: 3, inputHeight: 13, inputWidth: 11, outputChannels: 33,
                             kernelHeight: 5, kernelWidth: 5, strideHeight: 2, strideWidth: 1,
                             paddingHeight: 2, paddingWidth: 3),
            // More output channels and positions than one implicit-GEMM tile, depth not a multiple of CONV_TK.
            Conv2DDescriptor(batch: 3, inputChannels: 7, inputHeight: 11, inputWidth: 13, outputChannels: 70,
                             kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1, groups: 1),
            Conv2DDescriptor(batch: 2, inputChannels: 4, inputHeight: 6, inputWidth: 7, outputChannels: 4,
                             kernelHeight: 3, kernelWidth: 3, strideHeight: 3, strideWidth: 2, paddingHeight: 1,
                             paddingWidth: 1, dilationHeight: 2, dilationWidth: 1, groups: 4),
            // Rows wide enough for the vectorRows kernel's whole-vector loads (stride 1 and stride 2) beside
            // its bounds-checked edges.
            Conv2DDescriptor(batch: 2, inputChannels: 3, inputHeight: 5, inputWidth: 37, outputChannels: 5,
                             kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1),
            Conv2DDescriptor(batch: 2, inputChannels: 2, inputHeight: 5, inputWidth: 64, outputChannels: 3,
                             kernelHeight: 3, kernelWidth: 3, strideHeight: 2, strideWidth: 2,
                             paddingHeight: 1, paddingWidth: 1),
        ]
        return small ? [all[1], all[2], all[3], all[4], all[8], all[9]] : all
    }

    /// |gpu − cpu| ≤ 1e-4 · (Σ|terms| of that output), judged against the magnitude reference.
    func assertMatches(_ actual: [Float], _ expected: [Float], scale: [Double], _ what: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, context("\(what): count"), file: file, line: line)
        var failures = 0
        for index in expected.indices where !(abs(Double(actual[index]) - Double(expected[index]))
                                                <= 1e-4 * scale[index] + 1e-30) {
            failures += 1
            if failures <= 3 {
                XCTFail(context("\(what): element \(index) is \(actual[index]), expected \(expected[index])"),
                        file: file, line: line)
            }
        }
        if failures > 3 { XCTFail(context("\(what): \(failures) elements differ in all"), file: file, line: line) }
    }

    func testForwardEachAlgorithm() throws {
        let saved = gpu.implicitGemmKernel
        defer { gpu.implicitGemmKernel = saved }
        for (algorithm, kernel) in [(ConvolutionAlgorithm.im2col, saved), (.implicitGemm, .localTiles),
                                    (.implicitGemm, .vectorRows)] {
            gpu.implicitGemmKernel = kernel
            for (index, d) in grid.enumerated() {
                for withBias in [index.isMultiple(of: 2), !index.isMultiple(of: 2)] {
                    let xs = uniform(d.inputCount), ws = uniform(d.weightCount)
                    let biases = withBias ? uniform(d.outputChannels) : nil
                    let x = try pair(xs), w = try pair(ws), bias = try biases.map { try pair($0) }
                    let y = try poisonedPair(d.outputCount)
                    try gpu.conv2D(x.gpu, w.gpu, bias?.gpu, y.gpu, descriptor: d, algorithm: algorithm)
                    try cpu.conv2D(x.cpu, w.cpu, bias?.cpu, y.cpu, descriptor: d)
                    let result = try read(y, count: d.outputCount)
                    let scale = CPUBackend.referenceConv2D(xs.map(abs), ws.map(abs), biases?.map(abs), descriptor: d)
                    assertMatches(result.gpu, result.cpu, scale: scale, "\(algorithm) (\(kernel)) forward \(d) bias \(withBias)")
                }
            }
        }
    }

    func testBackwardData() throws {
        for d in grid {
            let dys = uniform(d.outputCount), ws = uniform(d.weightCount)
            let dy = try pair(dys), w = try pair(ws), dx = try poisonedPair(d.inputCount)
            try gpu.conv2DBackwardData(dy.gpu, w.gpu, dx.gpu, descriptor: d)
            try cpu.conv2DBackwardData(dy.cpu, w.cpu, dx.cpu, descriptor: d)
            let result = try read(dx, count: d.inputCount)
            let scale = CPUBackend.referenceConv2DBackwardData(dys.map(abs), ws.map(abs), descriptor: d)
            assertMatches(result.gpu, result.cpu, scale: scale, "backward data \(d)")
        }
    }

    func testBackwardWeight() throws {
        // The last shape has more output rows (2 × 70) than one chunk of conv_backward_weight_rows holds
        // (64 Ki floats of dy over CONV_BWM ≥ 8 channels × 64 columns: at most 128 rows), so its partial sums
        // are added up by conv_sum_chunks.
        let chunked = Conv2DDescriptor(batch: 2, inputChannels: 2, inputHeight: 70, inputWidth: 64, outputChannels: 3,
                                       kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1)
        for algorithm in [BackwardWeightAlgorithm.im2col, .implicitRows] {
            for d in grid + [chunked] {
                let xs = uniform(d.inputCount), dys = uniform(d.outputCount)
                let x = try pair(xs), dy = try pair(dys), dw = try poisonedPair(d.weightCount)
                try gpu.conv2DBackwardWeight(x.gpu, dy.gpu, dw.gpu, descriptor: d, algorithm: algorithm)
                try cpu.conv2DBackwardWeight(x.cpu, dy.cpu, dw.cpu, descriptor: d)
                let result = try read(dw, count: d.weightCount)
                let scale = CPUBackend.referenceConv2DBackwardWeight(xs.map(abs), dys.map(abs), descriptor: d)
                assertMatches(result.gpu, result.cpu, scale: scale, "\(algorithm) backward weight \(d)")
            }
        }
    }

    /// L = Σ r ⊙ conv2D(x, w) is linear in x and w: a central difference of the Double reference forward
    /// over the actual Float step is the exact gradient, which the device's backward passes must match.
    func testBackwardPassesAgainstFiniteDifferences() throws {
        let d = Conv2DDescriptor(batch: 2, inputChannels: 4, inputHeight: 5, inputWidth: 6, outputChannels: 2,
                                 kernelHeight: 3, kernelWidth: 2, strideHeight: 2, strideWidth: 1,
                                 paddingHeight: 1, paddingWidth: 1, dilationHeight: 1, dilationWidth: 2, groups: 2)
        let xs = uniform(d.inputCount), ws = uniform(d.weightCount), rs = uniform(d.outputCount)
        func loss(_ x: [Float], _ w: [Float]) -> Double {
            zip(CPUBackend.referenceConv2D(x, w, nil, descriptor: d), rs).reduce(0) { $0 + $1.0 * Double($1.1) }
        }
        func difference(_ values: [Float], at index: Int, _ evaluate: ([Float]) -> Double) -> Float {
            var plus = values, minus = values
            plus[index] += 0.25; minus[index] -= 0.25
            return Float((evaluate(plus) - evaluate(minus)) / Double(plus[index] - minus[index]))
        }
        let x = try pair(xs), w = try pair(ws), r = try pair(rs)
        let dx = try poisonedPair(d.inputCount), dw = try poisonedPair(d.weightCount)
        try gpu.conv2DBackwardData(r.gpu, w.gpu, dx.gpu, descriptor: d)
        try gpu.conv2DBackwardWeight(x.gpu, r.gpu, dw.gpu, descriptor: d)
        let numericX = xs.indices.map { difference(xs, at: $0) { loss($0, ws) } }
        let numericW = ws.indices.map { difference(ws, at: $0) { loss(xs, $0) } }
        assertClose(try gpu.readFloats(dx.gpu, count: d.inputCount), numericX, tolerance: 1e-4,
                    "finite-difference dx \(d)")
        assertClose(try gpu.readFloats(dw.gpu, count: d.weightCount), numericW, tolerance: 1e-4,
                    "finite-difference dw \(d)")
    }

    /// The automatic choice is one of the two real algorithms, and the setting round-trips.
    func testAlgorithmSetting() throws {
        let d = Conv2DDescriptor(batch: 2, inputChannels: 3, inputHeight: 8, inputWidth: 8, outputChannels: 4,
                                 kernelHeight: 3, kernelWidth: 3)
        let saved = gpu.convolutionAlgorithm
        defer { gpu.convolutionAlgorithm = saved }
        gpu.convolutionAlgorithm = .automatic
        XCTAssertNotEqual(gpu.chosenConvolutionAlgorithm(for: d), .automatic)
        gpu.convolutionAlgorithm = .im2col
        XCTAssertEqual(gpu.chosenConvolutionAlgorithm(for: d), .im2col)
        gpu.convolutionAlgorithm = .implicitGemm
        XCTAssertEqual(gpu.chosenConvolutionAlgorithm(for: d), .implicitGemm)

        let savedWeight = gpu.backwardWeightAlgorithm
        defer { gpu.backwardWeightAlgorithm = savedWeight }
        gpu.backwardWeightAlgorithm = .automatic
        XCTAssertNotEqual(gpu.chosenBackwardWeightAlgorithm(for: d), .automatic)
        for algorithm in [BackwardWeightAlgorithm.im2col, .implicitRows] {
            gpu.backwardWeightAlgorithm = algorithm
            XCTAssertEqual(gpu.chosenBackwardWeightAlgorithm(for: d), algorithm)
        }
    }

    func testInvalidGeometryAndShortBuffersThrow() throws {
        let bad = Conv2DDescriptor(batch: 1, inputChannels: 3, inputHeight: 4, inputWidth: 4, outputChannels: 4,
                                   kernelHeight: 5, kernelWidth: 3)
        let buffer = try gpu.allocate(count: 256)
        XCTAssertThrowsError(try gpu.conv2D(buffer, buffer, nil, buffer, descriptor: bad))
        let d = Conv2DDescriptor(batch: 1, inputChannels: 2, inputHeight: 4, inputWidth: 4, outputChannels: 2,
                                 kernelHeight: 3, kernelWidth: 3)
        XCTAssertThrowsError(try gpu.conv2DBackwardData(try gpu.allocate(count: d.outputCount - 1),
                                                        try gpu.allocate(count: d.weightCount),
                                                        try gpu.allocate(count: d.inputCount), descriptor: d))
        XCTAssertThrowsError(try gpu.conv2DBackwardWeight(try gpu.allocate(count: d.inputCount),
                                                          try gpu.allocate(count: d.outputCount),
                                                          try cpu.allocate(count: d.weightCount), descriptor: d))
    }
}
