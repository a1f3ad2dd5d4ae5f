import Foundation
import Opal
import OpalCPU
import OpalOpenCL

/// K2: 2-D convolution, forward, backward-data and backward-weight, on pre-allocated device buffers.
///
/// On OpenCL devices the forward pass is timed with Opal's chosen algorithm (`ConvolutionAlgorithm`
/// `.automatic`), and beside it with im2col + CLBlast (the reference) and with each algorithm forced;
/// the backward passes are im2col/col2im + the backend's GEMM, against the same passes with CLBlast's
/// GEMM (the reference). On the native CPU, where Opal's packed GEMM serves a pass (AVX-512, at least 64
/// rows of col), im2col + OpenBLAS is measured beside it as the reference; elsewhere the pass *is* im2col +
/// OpenBLAS and is reported alone.
public struct ConvBenchmark {
    public struct Shape: Sendable {
        public var name: String
        public var descriptor: Conv2DDescriptor
        public init(name: String, descriptor: Conv2DDescriptor) { self.name = name; self.descriptor = descriptor }
    }

    public enum Pass: String, Sendable, Codable, CaseIterable {
        case forward, backwardData = "backward-data", backwardWeight = "backward-weight"
    }

    public struct Row: Sendable, Codable {
        public var shape: String
        public var descriptor: String
        public var pass: Pass
        public var flops: Double
        /// The algorithm the pass ran (OpenCL: `conv2D`'s choice for the forward; native CPU:
        /// `CPUBackend.convolutionAlgorithm`).
        public var algorithm: String
        public var opal: Measurement
        /// im2col + CLBlast on OpenCL devices, im2col + OpenBLAS on the native CPU; nil where Opal's path is
        /// the reference itself (a CPU pass that runs im2col + OpenBLAS).
        public var reference: Measurement?
        public var referenceName: String?
        /// Each forward algorithm forced, on OpenCL devices.
        public var implicitGemm: Measurement?
        public var im2col: Measurement?
        public var opalGigaflops: Double { gigaflops(flops, milliseconds: opal.medianMilliseconds) }
        public var referenceGigaflops: Double? {
            reference.map { gigaflops(flops, milliseconds: $0.medianMilliseconds) }
        }
        /// Reference time / Opal time (above 1: Opal is faster).
        public var speedup: Double? { reference.map { $0.medianMilliseconds / opal.medianMilliseconds } }
    }

    /// The K2 shapes.
    public static let k2Shapes = [
        Shape(name: "K2 3×3", descriptor: Conv2DDescriptor(
            batch: 32, inputChannels: 64, inputHeight: 56, inputWidth: 56, outputChannels: 64,
            kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1)),
        Shape(name: "K2 7×7 s2", descriptor: Conv2DDescriptor(
            batch: 32, inputChannels: 3, inputHeight: 224, inputWidth: 224, outputChannels: 64,
            kernelHeight: 7, kernelWidth: 7, strideHeight: 2, strideWidth: 2, paddingHeight: 3, paddingWidth: 3)),
    ]

    /// The two convolutions of the R2 CNN (batch 64, 28×28 input).
    public static let r2Shapes = [
        Shape(name: "R2 conv1", descriptor: Conv2DDescriptor(
            batch: 64, inputChannels: 1, inputHeight: 28, inputWidth: 28, outputChannels: 32,
            kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1)),
        Shape(name: "R2 conv2", descriptor: Conv2DDescriptor(
            batch: 64, inputChannels: 32, inputHeight: 14, inputWidth: 14, outputChannels: 64,
            kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1)),
    ]

    /// The two convolutions of the R5 DCGAN (batch 64): D's 1→64 and 64→128 4×4 stride-2 layers, whose
    /// backward-data passes are also G's transposed convolutions 64→1 and 128→64.
    public static let r5Shapes = [
        Shape(name: "R5 conv1", descriptor: Conv2DDescriptor(
            batch: 64, inputChannels: 1, inputHeight: 28, inputWidth: 28, outputChannels: 64,
            kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2, paddingHeight: 1, paddingWidth: 1)),
        Shape(name: "R5 conv2", descriptor: Conv2DDescriptor(
            batch: 64, inputChannels: 64, inputHeight: 14, inputWidth: 14, outputChannels: 128,
            kernelHeight: 4, kernelWidth: 4, strideHeight: 2, strideWidth: 2, paddingHeight: 1, paddingWidth: 1)),
    ]

    public var shapes: [Shape]
    public var passes: [Pass]
    public var runs: Int
    public init(shapes: [Shape] = ConvBenchmark.k2Shapes + ConvBenchmark.r2Shapes, passes: [Pass] = Pass.allCases,
                runs: Int = 10) {
        self.shapes = shapes; self.passes = passes; self.runs = runs
    }

    public func run(on device: Device, progress: (String) -> Void = { _ in }) throws -> [Row] {
        let backend = device.backend
        var rows: [Row] = []
        for shape in shapes {
            let d = shape.descriptor
            if let problem = d.problem {
                throw TensorError.invalidArgument(op: "bench conv", reason: "\(d): \(problem)")
            }
            func filled(_ count: Int, seed: UInt64) throws -> any DeviceBuffer {
                var generator = SeededGenerator(seed: seed)
                let buffer = try backend.allocate(count: count)
                try backend.write((0..<count).map { _ in Float.random(in: -1...1, using: &generator) }, to: buffer)
                return buffer
            }
            let x = try filled(d.inputCount, seed: 1), w = try filled(d.weightCount, seed: 2)
            let bias = try filled(d.outputChannels, seed: 3), dy = try filled(d.outputCount, seed: 4)
            let y = try backend.allocate(count: d.outputCount), dx = try backend.allocate(count: d.inputCount)
            let dw = try backend.allocate(count: d.weightCount)
            // Big shapes on CPU-class devices take hundreds of milliseconds a run: fewer runs there.
            let runs = d.flops > 2e9 && device.kind != .gpu ? max(3, self.runs / 2) : self.runs
            for pass in passes {
                progress("\(shape.name) \(pass.rawValue) on \(device.name)…")
                var row: Row
                if let opencl = backend as? OpenCLBackend {
                    let savedEngine = opencl.gemmEngine
                    defer { opencl.gemmEngine = savedEngine }
                    switch pass {
                    case .forward:
                        let chosen = opencl.chosenConvolutionAlgorithm(for: d)
                        func forward(_ algorithm: ConvolutionAlgorithm) throws -> Measurement {
                            try measure(on: device, warmup: 2, runs: runs) {
                                try opencl.conv2D(x, w, bias, y, descriptor: d, algorithm: algorithm)
                            }
                        }
                        let implicitGemm = try forward(.implicitGemm)
                        let im2col = try forward(.im2col)
                        opencl.gemmEngine = .clblast
                        let reference = try forward(.im2col)
                        row = Row(shape: shape.name, descriptor: d.description, pass: pass, flops: d.flops,
                                  algorithm: chosen.rawValue, opal: chosen == .implicitGemm ? implicitGemm : im2col,
                                  reference: reference, referenceName: "im2col + CLBlast",
                                  implicitGemm: implicitGemm, im2col: im2col)
                    case .backwardData, .backwardWeight:
                        let measurement = try measure(on: device, warmup: 2, runs: runs) {
                            try time(pass, opencl, x: x, w: w, dy: dy, dx: dx, dw: dw, d)
                        }
                        let algorithm = pass == .backwardWeight
                            && opencl.chosenBackwardWeightAlgorithm(for: d) == .implicitRows
                            ? "implicit rows" : "im2col + \(opencl.gemmEngine.rawValue)"
                        // The reference: im2col/col2im with CLBlast's GEMM.
                        opencl.gemmEngine = .clblast
                        let reference = try measure(on: device, warmup: 2, runs: runs) {
                            try time(pass, opencl, x: x, w: w, dy: dy, dx: dx, dw: dw, d, reference: true)
                        }
                        row = Row(shape: shape.name, descriptor: d.description, pass: pass, flops: d.flops,
                                  algorithm: algorithm, opal: measurement,
                                  reference: reference, referenceName: "im2col + CLBlast")
                    }
                } else if let cpu = backend as? CPUBackend {
                    let run = {
                        switch pass {
                        case .forward: try cpu.conv2D(x, w, bias, y, descriptor: d)
                        case .backwardData: try cpu.conv2DBackwardData(dy, w, dx, descriptor: d)
                        case .backwardWeight: try cpu.conv2DBackwardWeight(x, dy, dw, descriptor: d)
                        }
                    }
                    let algorithm = cpu.convolutionAlgorithm(d, backwardWeight: pass == .backwardWeight)
                    let measurement = try measure(on: device, warmup: 2, runs: runs, run)
                    // Where Opal's own GEMM runs, im2col + OpenBLAS (the engine it replaces) is the reference.
                    var reference: Measurement?
                    if algorithm != "im2col + OpenBLAS" {
                        let engine = cpu.convolutionEngine
                        cpu.convolutionEngine = .openBLAS
                        defer { cpu.convolutionEngine = engine }
                        reference = try measure(on: device, warmup: 2, runs: runs, run)
                    }
                    row = Row(shape: shape.name, descriptor: d.description, pass: pass, flops: d.flops,
                              algorithm: algorithm, opal: measurement, reference: reference,
                              referenceName: reference == nil ? nil : "im2col + OpenBLAS")
                } else {
                    throw TensorError.device("bench conv: \(device.name) has no convolution")
                }
                rows.append(row)
            }
        }
        return rows
    }

    /// One backward pass: the backend's choice, or (`reference`) im2col + the backend's GEMM.
    private func time(_ pass: Pass, _ backend: OpenCLBackend, x: any DeviceBuffer, w: any DeviceBuffer,
                      dy: any DeviceBuffer, dx: any DeviceBuffer, dw: any DeviceBuffer, _ d: Conv2DDescriptor,
                      reference: Bool = false) throws {
        switch pass {
        case .forward: break
        case .backwardData: try backend.conv2DBackwardData(dy, w, dx, descriptor: d)
        case .backwardWeight:
            try backend.conv2DBackwardWeight(x, dy, dw, descriptor: d, algorithm: reference ? .im2col : .automatic)
        }
    }
}
