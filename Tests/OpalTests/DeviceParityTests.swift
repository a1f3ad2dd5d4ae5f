import XCTest
@testable import Opal
import OpalOpenCL

/// The same model and data on the native CPU and on the OpenCL device (PoCL in CI) must agree,
/// and the OpenCL path must never wait on the host inside a training step.
final class DeviceParityTests: XCTestCase {
    /// A few Adam steps of a small MLP from identical initial weights give the same weights on both devices.
    func testTrainingStepsAgreeAcrossDevices() throws {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("seed \(seed)")
        var weights: [[[Float]]] = []
        for device in [Device.cpu, try openCLTestDevice()] {
            Random.seed(seed)
            let model = try makeMLP(inputSize: 37, hiddenSizes: [33, 17], outputSize: 7).moved(to: device)
            let optimizer = try Adam(parameters: model.parameters, learningRate: 1e-2)
            let x = try Tensor.uniform([13, 37], in: -1...1, seed: UInt32(truncatingIfNeeded: seed), on: device)
            let labels = try Tensor((0..<13).map { Int32($0 % 7) }, shape: [13], on: device)
            for _ in 0..<5 {
                optimizer.zeroGradients()
                let loss = try crossEntropy(logits: model(x), labels: labels)
                try loss.backward()
                try optimizer.step()
            }
            weights.append(try model.parameters.map { try $0.value.scalars() })
        }
        for (cpu, openCL) in zip(weights[0], weights[1]) {
            for (a, b) in zip(cpu, openCL) {
                XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(a)), "seed \(seed)")
            }
        }
    }

    /// Forward, backward and the optimizer of R1 enqueue everything: zero host waits per step.
    func testTrainingStepNeverWaitsOnTheHost() throws {
        let device = try openCLTestDevice()
        let backend = try XCTUnwrap(device.backend as? OpenCLBackend)
        Random.seed(7)
        let model = try makeMLP(inputSize: 784, hiddenSizes: [64, 64], outputSize: 10).moved(to: device)
        let optimizer = try Adam(parameters: model.parameters)
        let x = try Tensor.uniform([32, 784], seed: 1, on: device)
        let labels = try Tensor((0..<32).map { Int32($0 % 10) }, shape: [32], on: device)
        func step() throws -> Tensor {
            optimizer.zeroGradients()
            let loss = try crossEntropy(logits: model(x), labels: labels)
            try loss.backward()
            try optimizer.step()
            return loss
        }
        _ = try step()
        try device.synchronize()
        let before = backend.hostWaitCount
        var loss = try step()
        for _ in 0..<4 { loss = try step() }
        XCTAssertEqual(backend.hostWaitCount - before, 0, "host waits inside 5 training steps")
        XCTAssertTrue(try loss.item().isFinite)
        XCTAssertEqual(backend.hostWaitCount - before, 1, "reading the loss is one host wait")
    }

    /// Device selection: explicit requests, errors for impossible ones.
    func testDeviceRequests() throws {
        XCTAssertEqual(try DeviceRequest(parsing: "auto"), .automatic)
        XCTAssertEqual(try DeviceRequest(parsing: "CPU"), .cpu)
        XCTAssertEqual(try DeviceRequest(parsing: "opencl:3"), .openCL(3))
        XCTAssertThrowsError(try DeviceRequest(parsing: "tpu")) { XCTAssertTrue("\($0)".contains("unknown device 'tpu'")) }
        XCTAssertThrowsError(try DeviceRequest(parsing: "opencl:-1"))
        XCTAssertThrowsError(try Device.openCL(99)) { XCTAssertTrue("\($0)".contains("opencl:99")) }
        XCTAssertTrue(Device.cpu === Device.cpu)
        if !DeviceRegistry.shared.openCL.contains(where: { $0.device.type == .gpu }) {
            XCTAssertThrowsError(try Device.named("gpu")) { XCTAssertTrue("\($0)".contains("no GPU")) }
            XCTAssertEqual(Device.best, Device.cpu)
        }
    }

    /// Tensors on different devices never mix silently.
    func testMixingDevicesIsAnError() throws {
        let device = try openCLTestDevice()
        let a = try Tensor.ones([3], on: .cpu)
        let b = try Tensor.ones([3], on: device)
        XCTAssertThrowsError(try a + b) { error in
            XCTAssertTrue("\(error)".contains("different devices"), "\(error)")
        }
        XCTAssertEqual(try b.moved(to: .cpu).scalars(), [1, 1, 1])
    }
}
