import Foundation
import XCTest
@testable import Opal

/// `Module.save(to:)` / `load(from:)`: names, shapes, devices, strictness, extra tensors.
final class CheckpointTests: ScratchDirectoryTestCase {
    private var seed: UInt64 = 0

    override func setUpWithError() throws {
        try super.setUpWithError()
        seed = UInt64.random(in: 0...UInt64(UInt32.max))
    }

    private func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    private func mlp(_ hidden: [Int], outputSize: Int = 7, seed: UInt64, on device: Device = .cpu) throws -> Sequential {
        Random.seed(seed)
        return try makeMLP(inputSize: 37, hiddenSizes: hidden, outputSize: outputSize).moved(to: device)
    }

    private func values(_ module: any Module) throws -> [[Float]] {
        try module.parameters.map { try $0.value.scalars() }
    }

    /// Bitwise equality of parameter values, reporting only the first difference.
    private func assertSameValues(_ actual: [[Float]], _ expected: [[Float]], _ message: String = "",
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "parameter count", file: file, line: line)
        for (index, (a, b)) in zip(actual, expected).enumerated() where a.map(\.bitPattern) != b.map(\.bitPattern) {
            let element = (0..<min(a.count, b.count)).first { a[$0].bitPattern != b[$0].bitPattern } ?? min(a.count, b.count)
            return XCTFail("parameter \(index) differs at element \(element) (\(a.count) vs \(b.count) elements) \(message), seed \(seed)",
                           file: file, line: line)
        }
    }

    private func input(on device: Device = .cpu) throws -> Tensor {
        try Tensor.uniform([13, 37], in: -2...2, seed: UInt32(truncatingIfNeeded: seed), on: device)
    }

    func testSavedModelReproducesItsOutputs() throws {
        let original = try mlp([33, 17], seed: seed)
        let other = try mlp([33, 17], seed: seed &+ 1)
        let x = try input()
        let expected = try original(x).scalars()
        XCTAssertNotEqual(try other(x).scalars(), expected, "seed \(seed): the two models should differ before loading")

        let file = url("mlp.safetensors")
        try original.save(to: file, metadata: ["epoch": "3", "model": "mlp"])
        let metadata = try other.load(from: file)
        XCTAssertEqual(metadata, ["epoch": "3", "model": "mlp"])
        XCTAssertEqual(try other(x).scalars().map(\.bitPattern), expected.map(\.bitPattern), "seed \(seed)")

        // The file holds PyTorch's names and layouts (Linear weight [out, in]).
        let contents = try CheckpointContents(contentsOf: file)
        XCTAssertEqual(Set(contents.tensors.keys), ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"])
        XCTAssertEqual(contents.tensors["1.weight"]?.shape, [33, 37])
        XCTAssertEqual(contents.tensors["5.bias"]?.shape, [7])
        XCTAssertEqual(contents.tensors["3.weight"]?.floats, try original.namedParameters.first { $0.name == "3.weight" }!
            .parameter.value.scalars())

        // Loaded parameters are still trainable leaves: a backward pass reaches them.
        let loss = try other(x).sum()
        try loss.backward()
        for (name, parameter) in other.namedParameters {
            XCTAssertNotNil(parameter.gradient, "\(name) lost its gradient after loading")
        }
    }

    func testFrozenParametersStayFrozenAfterLoading() throws {
        let original = try mlp([5], seed: seed)
        let other = try mlp([5], seed: seed &+ 1)
        other.freeze()
        let file = url("frozen.safetensors")
        try original.save(to: file)
        try other.load(from: file)
        XCTAssert(other.parameters.allSatisfy { !$0.isTrainable && !$0.value.requiresGradient })
        assertSameValues(try values(other), try values(original))
    }

    func testShapeMismatchNamesTheTensorAndBothShapesAndChangesNothing() throws {
        let file = url("wide.safetensors")
        try mlp([33], seed: seed).save(to: file)
        let narrow = try mlp([32], seed: seed &+ 1)
        let before = try values(narrow)
        XCTAssertThrowsError(try narrow.load(from: file)) { error in
            XCTAssertEqual(error as? CheckpointError,
                           .shapeMismatch(path: file.path, tensor: "1.weight", expected: [32, 37], found: [33, 37]))
            let text = String(describing: error)
            for fragment in [file.path, "\"1.weight\"", "[33, 37]", "[32, 37]"] {
                XCTAssert(text.contains(fragment), "\(text) lacks \(fragment)")
            }
        }
        assertSameValues(try values(narrow), before)
        XCTAssertThrowsError(try narrow.load(from: file, strict: false))
        assertSameValues(try values(narrow), before)

        // All or nothing: a mismatch in the last layer leaves the matching first layer unassigned too.
        let otherHead = try mlp([33], outputSize: 8, seed: seed &+ 2)
        let headBefore = try values(otherHead)
        XCTAssertThrowsError(try otherHead.load(from: file)) { error in
            XCTAssertEqual(error as? CheckpointError,
                           .shapeMismatch(path: file.path, tensor: "3.weight", expected: [8, 33], found: [7, 33]))
        }
        assertSameValues(try values(otherHead), headBefore)
    }

    func testStrictLoadingRejectsMissingAndUnexpectedTensors() throws {
        let small = url("small.safetensors"), large = url("large.safetensors")
        let smallModel = try mlp([33], seed: seed)
        let largeModel = try mlp([33, 7], seed: seed &+ 1)
        try smallModel.save(to: small, metadata: ["size": "small"])
        try largeModel.save(to: large)

        // The large model misses "5.*" in the small file.
        let target = try mlp([33, 7], seed: seed &+ 2)
        let before = try values(target)
        XCTAssertThrowsError(try target.load(from: small)) { error in
            XCTAssertEqual(error as? CheckpointError, .missingTensors(path: small.path, names: ["5.weight", "5.bias"]))
            XCTAssert(String(describing: error).contains("strict: false"), "\(error)")
        }
        assertSameValues(try values(target), before)
        let report = try target.load(try CheckpointContents(contentsOf: small), strict: false)
        XCTAssertEqual(report.loadedNames, ["1.weight", "1.bias", "3.weight", "3.bias"])
        XCTAssertEqual(report.missingNames, ["5.weight", "5.bias"])
        XCTAssertEqual(report.unexpectedNames, [])
        XCTAssertEqual(report.metadata, ["size": "small"])
        let after = try values(target)
        assertSameValues(Array(after.prefix(4)), try values(smallModel))
        assertSameValues(Array(after.suffix(2)), Array(before.suffix(2)), "(missing parameters must keep their values)")

        // The small model has no parameter for "5.*" of the large file.
        let smallTarget = try mlp([33], seed: seed &+ 3)
        XCTAssertThrowsError(try smallTarget.load(from: large)) { error in
            XCTAssertEqual(error as? CheckpointError, .unexpectedTensors(path: large.path, names: ["5.bias", "5.weight"]))
        }
        // "1.*" and "3.*" have the same shapes in both models: they load, "5.*" is skipped.
        let unexpected = try smallTarget.load(try CheckpointContents(contentsOf: large), strict: false)
        XCTAssertEqual(unexpected.unexpectedNames, ["5.bias", "5.weight"])
        XCTAssertEqual(unexpected.missingNames, [])
        assertSameValues(try values(smallTarget), Array(try values(largeModel).prefix(4)))
        XCTAssertEqual(try smallTarget.load(from: large, strict: false), [:])
    }

    func testExtraTensorsAreSavedAndDoNotCountAsUnexpected() throws {
        let model = try mlp([9], seed: seed)
        let moment = try Tensor.uniform([9, 37], seed: 5, on: .cpu)
        let step = try Tensor([Int32(1234)], shape: [], on: .cpu)
        let file = url("extra.safetensors")
        try model.save(to: file, metadata: ["note": "with optimizer"],
                       extraTensors: ["optimizer.step": step, "optimizer.1.weight.m": moment])
        let contents = try CheckpointContents(contentsOf: file)
        XCTAssertEqual(contents.tensors["optimizer.step"], try CheckpointTensor(shape: [], ints: [1234]))
        XCTAssertEqual(contents.tensors["optimizer.1.weight.m"]?.floats, try moment.scalars())
        XCTAssertEqual(contents.metadata[CheckpointContents.extraTensorsMetadataKey], #"["optimizer.1.weight.m","optimizer.step"]"#)

        let other = try mlp([9], seed: seed &+ 1)
        let metadata = try other.load(from: file)   // strict, yet the extra tensors are fine
        XCTAssertEqual(metadata["note"], "with optimizer")
        assertSameValues(try values(other), try values(model))

        // Names that clash, and the reserved metadata key.
        XCTAssertThrowsError(try model.save(to: url("clash.safetensors"), extraTensors: ["1.weight": moment])) { error in
            XCTAssertEqual(error as? CheckpointError, .invalidContents(reason: "extra tensor \"1.weight\" has the name of a parameter"))
        }
        XCTAssertThrowsError(try model.save(to: url("reserved.safetensors"),
                                            metadata: [CheckpointContents.extraTensorsMetadataKey: "x"],
                                            extraTensors: ["s": step]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: url("clash.safetensors").path))
    }

    func testDTypeMismatchIsReported() throws {
        let model = try mlp([3], seed: seed)
        var contents = try model.checkpointContents()
        contents.tensors["1.bias"] = try CheckpointTensor(shape: [3], ints: [1, 2, 3])
        XCTAssertThrowsError(try model.load(contents)) { error in
            XCTAssertEqual(error as? CheckpointError,
                           .dtypeMismatch(path: "checkpoint", tensor: "1.bias", expected: .float32, found: .int32))
        }
    }

    func testMalformedFileErrorReachesTheCaller() throws {
        let file = url("garbage.safetensors")
        try Data("not a checkpoint at all".utf8).write(to: file)
        XCTAssertThrowsError(try mlp([3], seed: seed).load(from: file)) { error in
            guard case .invalidHeaderLength(file.path, _, _)? = error as? CheckpointError else { return XCTFail("\(error)") }
        }
    }

    /// Saving reads each parameter back from its device; loading assigns on each parameter's current device.
    func testSaveAndLoadAcrossDevices() throws {
        guard !DeviceRegistry.shared.openCL.isEmpty else {
            throw XCTSkip("no OpenCL device: \(DeviceRegistry.shared.discoveryMessage ?? "")")
        }
        let gpu = try Device.openCL(0)
        let onGPU = try mlp([33], seed: seed, on: gpu)
        let file = url("gpu.safetensors")
        try onGPU.save(to: file)
        let onCPU = try mlp([33], seed: seed &+ 1)
        try onCPU.load(from: file)
        XCTAssert(onCPU.parameters.allSatisfy { $0.device == .cpu })
        assertSameValues(try values(onCPU), try values(onGPU))

        let backOnGPU = try mlp([33], seed: seed &+ 2, on: gpu)
        try onCPU.save(to: file)
        try backOnGPU.load(from: file)
        XCTAssert(backOnGPU.parameters.allSatisfy { $0.device == gpu })
        let x = try input()
        let expected = try onCPU(x).scalars()
        let actual = try backOnGPU(x.moved(to: gpu)).scalars()
        let scale = expected.map(abs).max() ?? 1
        for (a, b) in zip(actual, expected) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, scale), "seed \(seed)") }
    }
}
