import Foundation

/// Runs `Benchmarks/peers/pytorch_reference.py` in the same run, when `python3 -c "import torch"` works.
public enum PyTorchPeer {
    /// The script: `$OPAL_PEERS_DIR/pytorch_reference.py`, else `Benchmarks/peers/` under the
    /// current directory, else beside this source file (a development checkout).
    public static var scriptPath: String? {
        var candidates: [String] = []
        if let directory = ProcessInfo.processInfo.environment["OPAL_PEERS_DIR"] {
            candidates.append(directory + "/pytorch_reference.py")
        }
        candidates.append(FileManager.default.currentDirectoryPath + "/Benchmarks/peers/pytorch_reference.py")
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(here.appendingPathComponent("peers/pytorch_reference.py").path)
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    public enum Outcome {
        case measured([String: Any])
        case unavailable(String)
    }

    /// Runs the script with `arguments` plus `--json` and returns its decoded JSON object.
    public static func run(_ arguments: [String]) -> Outcome {
        guard let script = scriptPath else {
            return .unavailable("Benchmarks/peers/pytorch_reference.py not found (run from the repository or set OPAL_PEERS_DIR)")
        }
        let probe = launch(["python3", "-c", "import torch"])
        guard probe.status == 0 else {
            return .unavailable("PyTorch is not installed: `pip install torch` (CPU wheels: --index-url https://download.pytorch.org/whl/cpu)")
        }
        let result = launch(["python3", script] + arguments + ["--json"])
        guard result.status == 0,
              let object = try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any] else {
            return .unavailable("the PyTorch reference failed (exit \(result.status)): \(result.output.suffix(500))")
        }
        return .measured(object)
    }

    private static func launch(_ arguments: [String]) -> (status: Int32, output: String) {
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
