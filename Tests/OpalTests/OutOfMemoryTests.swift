import XCTest
import OpenCLKit
import OpalOpenCL
@testable import Opal

/// Device out-of-memory on the OpenCL device (PoCL in CI): a huge request gives the documented error,
/// and training goes on afterwards with smaller requests.
final class OutOfMemoryTests: XCTestCase {
    private func openCLDevice() throws -> (Device, OpenCLBackend) {
        guard !DeviceRegistry.shared.openCL.isEmpty, let device = try? Device.openCL(0),
              let backend = device.backend as? OpenCLBackend else { throw XCTSkip("no OpenCL device") }
        return (device, backend)
    }

    private func trainSteps(on device: Device, steps: Int) throws -> [Float] {
        Random.seed(11)
        let model = try makeMLP(inputSize: 64, hiddenSizes: [32], outputSize: 10).moved(to: device)
        let optimizer = try Adam(parameters: model.trainableParameters, learningRate: 1e-2)
        let data = try Digits.load(split: .train).subset(0..<64)
        let x = try Tensor(data.features, shape: [64, 64], on: device)
        let y = try Tensor(data.labels, shape: [64], on: device)
        var losses: [Float] = []
        for _ in 0..<steps {
            optimizer.zeroGradients()
            let loss = try crossEntropy(logits: model(x), labels: y)
            try loss.backward()
            try optimizer.step()
            losses.append(try loss.item())
        }
        return losses
    }

    func testHugeRequestFailsClearlyAndTrainingContinues() throws {
        let (device, backend) = try openCLDevice()
        let huge = 1 << 42   // 16 TiB of floats: more than any device allocates at once
        XCTAssertThrowsError(try Tensor.zeros([huge], on: device)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("out of device memory") && message.contains("\(huge * 4) bytes"), message)
        }
        let losses = try trainSteps(on: device, steps: 5)
        XCTAssertTrue(losses.allSatisfy(\.isFinite))
        XCTAssertLessThan(losses.last!, losses.first!)
        XCTAssertEqual(backend.pool.budgetBytes, nil)
    }

    /// Under a memory budget the first request that does not fit fails with the sizes, the cache is
    /// released and retried, and a run that fits goes on.
    func testBudgetExhaustionReportsAndTheSmallerRetryTrains() throws {
        let (device, backend) = try openCLDevice()
        backend.pool.budgetBytes = backend.pool.liveBytes + 8 << 20   // 8 MiB more than what is live now
        defer { backend.pool.budgetBytes = nil }
        XCTAssertThrowsError(try Tensor.zeros([4 << 20], on: device)) { error in   // 16 MiB
            guard case .outOfMemory(let requested, _, _, _)? = error as? CLError else { return XCTFail("\(error)") }
            XCTAssertEqual(requested, 16 << 20)
        }
        let losses = try trainSteps(on: device, steps: 5)
        XCTAssertTrue(losses.allSatisfy(\.isFinite))
        XCTAssertLessThan(losses.last!, losses.first!)
    }
}
