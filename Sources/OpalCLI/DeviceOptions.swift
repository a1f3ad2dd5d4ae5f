import ArgumentParser
import Foundation
import Opal

/// `--device auto|gpu|cpu|opencl:N`, shared by every command that runs work.
struct DeviceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Device: auto (best GPU, else the native CPU), gpu, cpu, or opencl:N (see `opal devices`). Default: $OPAL_DEVICE or auto.",
        valueName: "device"))
    var device: String?

    var requestText: String { device ?? ProcessInfo.processInfo.environment["OPAL_DEVICE"] ?? "auto" }

    func validate() throws {
        do { _ = try DeviceRequest(parsing: requestText) } catch { throw ValidationError("\(error)") }
    }

    func resolve() throws -> Device {
        try DeviceRegistry.shared.device(for: DeviceRequest(parsing: requestText))
    }
}

/// Writes a line to standard error (notices that must not mix with machine-readable output).
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
