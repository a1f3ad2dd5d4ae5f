import Foundation
import XCTest

/// Runs the `opal` executable built beside this test bundle, for the CLI tests.
enum OpalProcess {
    /// The `opal` binary: the first folder above the test bundle that holds one.
    static var executable: URL {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("opal").path),
              directory.path != "/" {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("opal")
    }

    /// Runs `opal arguments` (with `environment` added to this process's) and waits for it; standard output
    /// and standard error apart. Standard error goes through a file, so a chatty child cannot stall on a full
    /// pipe that nobody reads.
    /// - Throws: `XCTSkip` when the executable has not been built.
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String, errors: String) {
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw XCTSkip("opal executable not built beside the tests (run `swift build --build-tests`)")
        }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errorFile = FileManager.default.temporaryDirectory.appendingPathComponent("opal-cli-\(UUID().uuidString).err")
        guard FileManager.default.createFile(atPath: errorFile.path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: errorFile.path])
        }
        defer { try? FileManager.default.removeItem(at: errorFile) }
        let errorHandle = try FileHandle(forWritingTo: errorFile)
        defer { try? errorHandle.close() }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = errorHandle
        try process.run()
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let errorData = (try? Data(contentsOf: errorFile)) ?? Data()
        return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
    }

    /// `run`, with standard output followed by standard error as one text (for messages from either).
    static func runCombined(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        let result = try run(arguments, environment: environment)
        return (result.status, result.output + result.errors)
    }
}

/// A CLI test with a fresh temporary folder (`directory`) per test, removed afterwards, and the helpers
/// the command tests share.
class OpalCommandTestCase: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("opal-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// Runs `opal` with `arguments`; its standard output and standard error as one text.
    func opal(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try OpalProcess.runCombined(arguments)
    }

    /// The run failed with `status`, said `phrase`, and shows no sign of a crash.
    func assertCleanFailure(_ result: (status: Int32, output: String), status: Int32, mentions phrase: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, status, result.output, file: file, line: line)
        XCTAssertTrue(result.output.contains(phrase), "expected '\(phrase)' in: \(result.output)", file: file, line: line)
        for sign in ["Fatal error", "Backtrac", "Swift runtime failure"] {
            XCTAssertFalse(result.output.contains(sign), "crash signature '\(sign)' in: \(result.output)", file: file, line: line)
        }
    }

    /// Writes `text` to `name` in the test's folder and returns its path.
    func writeText(_ text: String, name: String = "text.txt") throws -> String {
        let url = directory.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url.path
    }
}
