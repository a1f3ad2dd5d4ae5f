import Foundation
import OpalCore
import OpalCPU
@testable import OpalOpenCL
import OpenCLKit
import XCTest

/// A backend opened with tuned parameters (a `TuningRecord` as `opal bench tune` writes it, with values that
/// differ from the built-in table) really uses them, and its GEMM, convolution and LSTM cell still match the
/// references: fresh random inputs, NaN-poisoned outputs, extents that are not multiples of any tile.
final class TunedParametersKernelTests: KernelTestCase {
    /// The tuned values: a GEMM entry other than the device's built-in one, CONV_VM 5 in groups of 4, WGS 32.
    var tunedGemm: GemmParameters!

    override func setUpWithError() throws {
        try super.setUpWithError()
        let device = gpu.device
        let builtIn = TuningStore.builtInParameters(for: device).gemm
        tunedGemm = ["32,32,16,4,16,8,0", "32,32,16,4,4,4,1", "8,8,16,4,4,4,1"]
            .compactMap(GemmParameters.init(specification:))
            .first { $0.isValid(maximumWorkGroupSize: device.maxWorkGroupSize) && $0 != builtIn }
        guard let tunedGemm else { throw XCTSkip("no alternative GEMM entry for \(device.name)") }
        var record = TuningRecord(for: device)
        func family(_ parameters: String) -> TunedFamily {
            TunedFamily(parameters: parameters, description: parameters, defaultMilliseconds: 2, tunedMilliseconds: 1,
                        candidates: 2, rejected: 0, shapes: [])
        }
        record[.gemm] = family(tunedGemm.specification)
        record[.conv] = family("5,4")
        record[.recurrent] = family("32")
        gpu = try OpenCLBackend(device: device, index: 0, tuning: record)
        XCTAssertEqual(gpu.parameters.gemm, tunedGemm)
        XCTAssertEqual(gpu.gemmEngine, .opal, "a tuned GEMM entry runs Opal's kernel")
        // The tuned record sets the forward kernel's values; the backward-weight block stays the table's.
        let table = try OpenCLBackend(device: device, index: 0).parameters.conv
        XCTAssertEqual(gpu.parameters.conv,
                       ConvParameters(channelsPerItem: 5, workGroupSize: 4,
                                      weightChannelsPerItem: table.weightChannelsPerItem,
                                      weightDepthsPerItem: table.weightDepthsPerItem))
        XCTAssertEqual(gpu.parameters.workGroupSize, 32)
    }

    func testGemmWithTunedTilesMatchesReference() throws {
        let extents = small ? [(1, 1, 1), (7, 33, 5), (33, 7, 20)]
                            : [(1, 1, 1), (7, 33, 65), (65, 7, 33), (130, 67, 41)]
        for (m, n, k) in extents {
            for transposeB in [false, true] {
                let d = GemmDescriptor(transposeA: false, transposeB: transposeB, m: m, n: n, k: k)
                let a = uniform(m * k), b = uniform(k * n)
                let c = try poisoned(m * n)
                try gpu.gemm(try buffer(a), try buffer(b), c, descriptor: d)
                let actual = try gpu.readFloats(c, count: m * n)
                let nan = [Float](repeating: .nan, count: m * n)
                let expected = Reference.gemm(a, b, nan, d), magnitude = Reference.gemmMagnitude(a, b, nan, d)
                for index in actual.indices where !(abs(actual[index] - expected[index]) <= 2e-5 * magnitude[index] + 1e-6) {
                    XCTFail(context("gemm \(d) with \(tunedGemm!): element \(index) is \(actual[index]), "
                                    + "expected \(expected[index])"))
                    break
                }
            }
        }
    }

    func testConvolutionWithTunedRegisterBlockMatchesCPU() throws {
        let previous = gpu.implicitGemmKernel
        gpu.implicitGemmKernel = .vectorRows   // the kernel ConvParameters tune (the default on CPU devices)
        defer { gpu.implicitGemmKernel = previous }
        // 7 and 11 output channels: not multiples of CONV_VM = 5; odd widths, stride 1 and 2.
        for d in [Conv2DDescriptor(batch: 2, inputChannels: 3, inputHeight: 9, inputWidth: 19, outputChannels: 7,
                                   kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1),
                  Conv2DDescriptor(batch: 1, inputChannels: 4, inputHeight: 11, inputWidth: 23, outputChannels: 11,
                                   kernelHeight: 3, kernelWidth: 3, strideHeight: 2, strideWidth: 2,
                                   paddingHeight: 1, paddingWidth: 1)] {
            let x = try pair(uniform(d.inputCount)), w = try pair(uniform(d.weightCount))
            let bias = try pair(uniform(d.outputChannels)), y = try poisonedPair(d.outputCount)
            try gpu.conv2D(x.gpu, w.gpu, bias.gpu, y.gpu, descriptor: d, algorithm: .implicitGemm)
            try cpu.conv2D(x.cpu, w.cpu, bias.cpu, y.cpu, descriptor: d)
            let values = try read(y, count: d.outputCount)
            assertClose(values.gpu, values.cpu, tolerance: 1e-4, "conv2D \(d) with CONV_VM 5")
        }
    }

    func testLSTMCellWithTunedWorkGroupMatchesCPU() throws {
        let d = RecurrentCellDescriptor(batch: 3, hiddenSize: small ? 13 : 77)
        let units = d.stateCount
        let gates = try pair(uniform(4 * units)), cell = try pair(uniform(units))
        let hidden = try poisonedPair(units), newCell = try poisonedPair(units), act = try poisonedPair(5 * units)
        try gpu.lstmCellForward(gates.gpu, cell.gpu, hidden: hidden.gpu, newCell: newCell.gpu, activations: act.gpu,
                                descriptor: d)
        try cpu.lstmCellForward(gates.cpu, cell.cpu, hidden: hidden.cpu, newCell: newCell.cpu, activations: act.cpu,
                                descriptor: d)
        for (name, buffers, count) in [("hidden", hidden, units), ("cell", newCell, units), ("activations", act, 5 * units)] {
            let values = try read(buffers, count: count)
            assertClose(values.gpu, values.cpu, tolerance: 1e-5, "LSTM cell \(name) with WGS 32")
        }
    }
}
