import Foundation

/// A peer framework's reference script in `Benchmarks/peers/` (`pytorch_reference.py`, `tinygrad_reference.py`),
/// run in the same process tree as the benchmark when the framework imports.
///
/// The interpreter is `$OPAL_PYTHON` when set, else `python3` on the `PATH`. The script prints one JSON object
/// (`--json` is added to the arguments); its standard error is discarded.
public struct PythonPeer: Sendable {
    /// Name shown in tables and JSON ("pytorch", "tinygrad").
    public var name: String
    /// The script's file name in `Benchmarks/peers/`.
    public var script: String
    /// The module `python3 -c "import …"` must find.
    public var module: String
    /// The command that installs the framework, printed when it is missing.
    public var installCommand: String

    public init(name: String, script: String, module: String, installCommand: String) {
        self.name = name; self.script = script; self.module = module; self.installCommand = installCommand
    }

    public static let pytorch = PythonPeer(
        name: "pytorch", script: "pytorch_reference.py", module: "torch",
        installCommand: "pip install torch --index-url https://download.pytorch.org/whl/cpu")
    public static let tinygrad = PythonPeer(
        name: "tinygrad", script: "tinygrad_reference.py", module: "tinygrad", installCommand: "pip install tinygrad")

    public enum Outcome {
        /// The script's JSON object.
        case measured([String: Any])
        /// The framework (or Python) is not installed; the text says how to install it.
        case missing(String)
        /// The script was not found or failed; the text says why.
        case failed(String)
    }

    /// The interpreter: `$OPAL_PYTHON`, else `python3`.
    public static var interpreter: String { ProcessInfo.processInfo.environment["OPAL_PYTHON"] ?? "python3" }

    /// `$OPAL_PEERS_DIR/<script>`, else `Benchmarks/peers/` under the current directory, else beside this source
    /// file (a development checkout).
    public var scriptPath: String? {
        var candidates: [String] = []
        if let directory = ProcessInfo.processInfo.environment["OPAL_PEERS_DIR"] { candidates.append(directory + "/" + script) }
        candidates.append(FileManager.default.currentDirectoryPath + "/Benchmarks/peers/" + script)
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(here.appendingPathComponent("peers/" + script).path)
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// Whether `python3 -c "import <module>"` works; if not, the line to print instead.
    public func availability() -> String? {
        let probe = Self.launch([Self.interpreter, "-c", "import \(module)"])
        guard probe.status != 0 else { return nil }
        return "\(name) is not installed for \(Self.interpreter) (`\(Self.interpreter) -c \"import \(module)\"` failed): install it with `\(installCommand)`"
    }

    /// Runs the script with `arguments` plus `--json` and returns its decoded JSON object.
    public func run(_ arguments: [String]) -> Outcome {
        guard let path = scriptPath else {
            return .failed("Benchmarks/peers/\(script) not found (run from the repository or set OPAL_PEERS_DIR)")
        }
        if let missing = availability() { return .missing(missing) }
        let result = Self.launch([Self.interpreter, path] + arguments + ["--json"])
        guard result.status == 0,
              let object = try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any] else {
            return .failed("\(script) failed (exit \(result.status)): \(result.output.suffix(500))")
        }
        return .measured(object)
    }

    static func launch(_ arguments: [String]) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return (127, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
