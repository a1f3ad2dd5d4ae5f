import ArgumentParser
import Foundation
import Opal
import OpalOpenCL
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
            print("    tuned           \(tuningSummary(of: d))")
        }
        print("default: \(choice.request) — \(choice.reason)")
    }
}

/// "gemm (2026-12-02, +23.4%), attention (…)" from the device's file in `TuningStore`, or "not tuned (…)".
func tuningSummary(of device: CLDevice, store: TuningStore = TuningStore()) -> String {
    guard let record = store.record(for: device), !record.families.isEmpty else {
        return "not tuned (run opal bench tune all)"
    }
    let dates = DateFormatter()
    dates.dateFormat = "yyyy-MM-dd"
    dates.timeZone = TimeZone(identifier: "UTC")
    let known = KernelFamily.allCases.compactMap { family in record[family].map { (family.rawValue, $0) } }
    let parts = known.map { name, outcome in
        let gain = outcome.parameters == nil ? "built-in kept" : String(format: "%+.1f%%", outcome.improvementPercent)
        return "\(name) (\(dates.string(from: outcome.date)), \(gain))"
    }
    let missing = KernelFamily.allCases.filter { record[$0] == nil }.map(\.rawValue)
    return parts.joined(separator: ", ") + (missing.isEmpty ? "" : "; not tuned: \(missing.joined(separator: ", "))")
}

func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f", value) + " " + units[unit]
}
