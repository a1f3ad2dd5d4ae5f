import Foundation
import XCTest
@testable import Opal

/// The first OpenCL device (PoCL in CI), or a skip that says why there is none.
func openCLTestDevice() throws -> Device {
    guard !DeviceRegistry.shared.openCL.isEmpty else {
        throw XCTSkip("no OpenCL device: \(DeviceRegistry.shared.discoveryMessage ?? "")")
    }
    return try Device.openCL(0)
}

/// A test case with a fresh scratch directory per test (`directory`), removed afterwards.
class ScratchDirectoryTestCase: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        try super.setUpWithError()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("opal-\(String(describing: type(of: self)))-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
        try super.tearDownWithError()
    }
}
