import ArgumentParser
import Foundation
import Opal
import OpenCLKit

/// `opal devices`: every device, its properties, and which one `auto` picks and why.
struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices", abstract: "List the OpenCL devices and the native CPU backend, and the default.")

    func run() throws {
        let registry = DeviceRegistry.shared
        let choice = registry.defaultChoice()
        let cpu = registry.cpu
        let mark = { (request: DeviceRequest) in request == choice.request ? "  ← default" : "" }
        print("cpu: \(cpu.backend.deviceDescription)\(mark(.cpu))")
        let devices = registry.openCL
        if devices.isEmpty {
            print("no OpenCL device: \(registry.discoveryMessage ?? "none found")")
            print("  (install pocl-opencl-icd for the CPU, or your GPU vendor's OpenCL driver)")
        }
        for info in devices {
            let d = info.device
            print("opencl:\(info.index): \(d.name)\(mark(.openCL(info.index)))")
            print("    platform        \(d.platformName)")
            print("    vendor          \(d.vendor)")
            print("    type            \(d.type.rawValue)")
            print("    version         \(d.version) · driver \(d.driverVersion) · \(d.openCLCVersion)")
            print("    compute units   \(d.computeUnits) @ \(d.maxClockMHz) MHz")
            print("    global memory   \(formatBytes(d.globalMemoryBytes)) (max allocation \(formatBytes(d.maxAllocationBytes)))")
            print("    local memory    \(formatBytes(d.localMemoryBytes))")
            print("    max work-group  \(d.maxWorkGroupSize)")
            print("    extensions      \(d.extensions.count): \(d.extensions.prefix(8).joined(separator: " "))\(d.extensions.count > 8 ? " …" : "")")
        }
        print("default: \(choice.request) — \(choice.reason)")
    }
}

func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f", value) + " " + units[unit]
}
