import Foundation
import Opal
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `opal train mlp` under signals: Ctrl-C (SIGINT) saves the training state and exits with 130;
/// SIGKILL in the middle of a save never damages the previous checkpoint; a non-finite loss stops
/// training and keeps the last good checkpoint.
final class InterruptTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("opal-interrupt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// The `opal` binary built beside this test bundle.
    private func executable() throws -> URL {
        let url = OpalProcess.executable
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw XCTSkip("opal executable not built beside the tests (run `swift build --build-tests`)")
        }
        return url
    }

    /// A running `opal` whose output goes to a file (read after it exits).
    private func launch(_ arguments: [String]) throws -> (process: Process, output: URL) {
        let output = directory.appendingPathComponent("output-\(UUID().uuidString).txt")
        FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        let process = Process()
        process.executableURL = try executable()
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return (process, output)
    }

    /// Polls `condition` every 20 ms for up to `seconds`.
    private func wait(seconds: Double, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    /// Waits for `process` to exit (killing it after `seconds`) and returns its status and output.
    private func finish(_ process: Process, output: URL, seconds: Double = 120) throws -> (status: Int32, output: String) {
        if !wait(seconds: seconds, until: { !process.isRunning }) {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            XCTFail("opal did not exit within \(seconds) s")
        }
        process.waitUntilExit()
        return (process.terminationStatus, try String(contentsOf: output, encoding: .utf8))
    }

    private func globalStep(_ url: URL) -> Int? {
        guard let contents = try? CheckpointContents(contentsOf: url) else { return nil }
        return try? TrainingState(metadata: contents.metadata).globalStep
    }

    private func trainArguments(checkpoint: URL, every: Int, hidden: String = "64,64") -> [String] {
        ["train", "mlp", "--dataset", "digits", "--device", "cpu", "--epochs", "50", "--patience", "0", "--no-progress",
         "--batch-size", "33", "--dropout", "0.2", "--hidden-sizes", hidden,
         "--checkpoint", checkpoint.path, "--checkpoint-every", String(every)]
    }

    func testCtrlCSavesTheTrainingStateAndExitsWith130() throws {
        let checkpoint = directory.appendingPathComponent("run.safetensors")
        let (process, output) = try launch(trainArguments(checkpoint: checkpoint, every: 7))
        XCTAssertTrue(wait(seconds: 60) { globalStep(checkpoint) != nil }, "no checkpoint appeared while training")
        let before = globalStep(checkpoint) ?? 0
        kill(process.processIdentifier, SIGINT)
        let result = try finish(process, output: output)
        XCTAssertEqual(result.status, 130, result.output)
        XCTAssertEqual(process.terminationReason, .exit, "opal must exit, not die of the signal")
        XCTAssertTrue(result.output.contains("interrupted: saved the training state to \(checkpoint.path)"), result.output)
        XCTAssertTrue(result.output.contains("--resume \(checkpoint.path)"), result.output)
        for sign in ["Fatal error", "Backtrac", "Swift runtime failure"] { XCTAssertFalse(result.output.contains(sign), result.output) }
        let contents = try CheckpointContents(contentsOf: checkpoint)
        let state = try TrainingState(metadata: contents.metadata)
        XCTAssertGreaterThanOrEqual(state.globalStep, before, "the interrupt's checkpoint is older than the periodic one")
        XCTAssertTrue(result.output.contains("\(state.globalStep) steps in all"), result.output)
        XCTAssertEqual(state.dropouts.count, 2)
        XCTAssertEqual(contents.metadata["opal.model"], "mlp")
        XCTAssertNotNil(contents.tensors["optimizer.m.1.weight"])
        Random.seed(1)
        try makeMLP(inputSize: 64, hiddenSizes: [64, 64], outputSize: 10, dropout: 0.2).load(from: checkpoint)

        // Resuming continues from that step; a second Ctrl-C saves again, further on.
        let (resumed, resumedOutput) = try launch(trainArguments(checkpoint: checkpoint, every: 5)
                                                  + ["--resume", checkpoint.path])
        XCTAssertTrue(wait(seconds: 60) { (globalStep(checkpoint) ?? 0) > state.globalStep }, "the resumed run saved nothing")
        kill(resumed.processIdentifier, SIGINT)
        let second = try finish(resumed, output: resumedOutput)
        XCTAssertEqual(second.status, 130, second.output)
        XCTAssertTrue(second.output.contains("resumed from \(checkpoint.path) at epoch \(state.epoch), step \(state.stepInEpoch)"),
                      second.output)
        XCTAssertGreaterThan(globalStep(checkpoint) ?? 0, state.globalStep)
    }

    /// SIGKILL in the middle of saves: a run saves a larger model (13 MB with the Adam moments) at
    /// every step; the test waits until the writer's temporary file appears (the save is under way),
    /// waits a random moment more and kills the process. The checkpoint file must still be a complete
    /// one (the previous or, when the rename already happened, the new one) that a model loads strictly.
    func testKillDuringSavesLeavesALoadableCheckpoint() throws {
        let checkpoint = directory.appendingPathComponent("big.safetensors")
        func temporaryFiles() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".tmp") }
        }
        let rounds = 6
        var killsMidSave = 0
        var lastStep = 0
        for round in 0..<rounds {
            let arguments = trainArguments(checkpoint: checkpoint, every: 1, hidden: "1024,1024")
                + (round == 0 ? [] : ["--resume", checkpoint.path])
            let (process, output) = try launch(arguments)
            XCTAssertTrue(wait(seconds: 60) { (globalStep(checkpoint) ?? 0) > lastStep }, "round \(round): no new checkpoint")
            let deadline = Date().addingTimeInterval(30)
            while temporaryFiles().isEmpty, process.isRunning, Date() < deadline { usleep(200) }
            usleep(UInt32.random(in: 0..<3_000))
            kill(process.processIdentifier, SIGKILL)
            let result = try finish(process, output: output)
            XCTAssertEqual(process.terminationReason, .uncaughtSignal, "round \(round): \(result.output)")
            let leftovers = temporaryFiles()
            if !leftovers.isEmpty { killsMidSave += 1 }
            for leftover in leftovers { try FileManager.default.removeItem(at: directory.appendingPathComponent(leftover)) }
            // Still a complete, valid checkpoint that a model loads strictly.
            let contents = try CheckpointContents(contentsOf: checkpoint)
            let step = try TrainingState(metadata: contents.metadata).globalStep
            XCTAssertGreaterThan(step, lastStep, "round \(round)")
            lastStep = step
            Random.seed(1)
            try makeMLP(inputSize: 64, hiddenSizes: [1024, 1024], outputSize: 10, dropout: 0.2).load(from: checkpoint)
        }
        print("SIGKILL during saves: \(killsMidSave) of \(rounds) kills hit a save in progress (a partial temporary file was left); the checkpoint always loaded (last step \(lastStep))")
        XCTAssertGreaterThan(killsMidSave, 0, "no kill hit a save in progress: the test checked nothing")
    }

    func testNonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws {
        let checkpoint = directory.appendingPathComponent("diverged.safetensors")
        let (process, output) = try launch(["train", "mlp", "--dataset", "digits", "--device", "cpu", "--epochs", "2",
                                            "--no-progress", "--learning-rate", "1e30", "--checkpoint", checkpoint.path,
                                            "--checkpoint-every", "1"])
        let result = try finish(process, output: output)
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.output.contains("non-finite"), result.output)
        XCTAssertTrue(result.output.contains("the last good checkpoint \(checkpoint.path)"), result.output)
        XCTAssertFalse(result.output.contains("test: accuracy"), result.output)
        let contents = try CheckpointContents(contentsOf: checkpoint)
        XCTAssertGreaterThan(try TrainingState(metadata: contents.metadata).globalStep, 0)
        for (name, tensor) in contents.tensors {
            XCTAssertTrue(tensor.floats?.allSatisfy(\.isFinite) ?? true, "\(name) is not finite")
        }
    }
}
