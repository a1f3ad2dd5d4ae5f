import Foundation
import OpalCPU
import OpalOpenCL
import OpenCLKit

/// What a user asks for: `auto` (best GPU, else the native CPU), `gpu` (best GPU or an error),
/// `cpu` (the native CPU backend) or `opencl:N` (the N-th OpenCL device in `opal devices`).
public enum DeviceRequest: Equatable, Sendable, CustomStringConvertible {
    case automatic, gpu, cpu, openCL(Int)

    /// Parses `auto`, `gpu`, `cpu`, `opencl:N` (case-insensitive).
    public init(parsing text: String) throws {
        let value = text.trimmingCharacters(in: .whitespaces).lowercased()
        switch value {
        case "auto", "": self = .automatic
        case "gpu": self = .gpu
        case "cpu": self = .cpu
        default:
            if value.hasPrefix("opencl:"), let index = Int(value.dropFirst("opencl:".count)), index >= 0 {
                self = .openCL(index)
            } else {
                throw DeviceError.unknownRequest(text)
            }
        }
    }

    public var description: String {
        switch self {
        case .automatic: return "auto"
        case .gpu: return "gpu"
        case .cpu: return "cpu"
        case .openCL(let index): return "opencl:\(index)"
        }
    }
}

public enum DeviceError: Error, CustomStringConvertible, Equatable {
    case unknownRequest(String)
    case noGPU(String)
    case noSuchOpenCLDevice(index: Int, available: Int, detail: String)
    case unavailable(String)

    public var description: String {
        switch self {
        case .unknownRequest(let text):
            return "unknown device '\(text)': use auto, gpu, cpu or opencl:N (see `opal devices`)"
        case .noGPU(let detail):
            return "no GPU found (\(detail)); use --device cpu, or install your GPU vendor's OpenCL driver (ICD)"
        case let .noSuchOpenCLDevice(index, available, detail):
            return available == 0
                ? "opencl:\(index) requested but there is no OpenCL device (\(detail)); install pocl-opencl-icd or your GPU vendor's ICD"
                : "opencl:\(index) requested but " + (available == 1 ? "only opencl:0 exists" : "only opencl:0…opencl:\(available - 1) exist")
                    + " (see `opal devices`)"
        case .unavailable(let message):
            return message
        }
    }
}

/// One OpenCL device as found on this machine, with its index for `opencl:N`.
public struct OpenCLDeviceInfo: Sendable {
    public let index: Int
    public let device: CLDevice
    /// Higher is better: compute units × clock, GPUs above everything else.
    public var score: Double {
        let base = Double(device.computeUnits) * Double(max(device.maxClockMHz, 1))
        return device.type == .gpu ? 1e12 + base : base
    }
}

/// Enumerates devices once per process and hands out one `Device` per backend (the scheduler).
public final class DeviceRegistry: @unchecked Sendable {
    // @unchecked: all mutable state is guarded by `lock`.
    public static let shared = DeviceRegistry()

    private let lock = NSLock()
    private var cachedCPU: Device?
    private var openCLDevices: [OpenCLDeviceInfo]?
    private var discoveryProblem: String?
    private var openCLBackends: [Int: Device] = [:]
    private var announced = false

    /// The native CPU backend (OpenBLAS + vectorised loops). Always available.
    public var cpu: Device {
        lock.lock(); defer { lock.unlock() }
        if let cachedCPU { return cachedCPU }
        let device = Device(backend: CPUBackend())
        cachedCPU = device
        return device
    }

    /// Every OpenCL device of every platform, in `opencl:N` order. Never throws: a missing
    /// platform leaves the list empty and `discoveryMessage` says why.
    public var openCL: [OpenCLDeviceInfo] {
        lock.lock(); defer { lock.unlock() }
        return discoverLocked()
    }

    /// Why there are no OpenCL devices, when there are none.
    public var discoveryMessage: String? {
        lock.lock(); defer { lock.unlock() }
        _ = discoverLocked()
        return discoveryProblem
    }

    private func discoverLocked() -> [OpenCLDeviceInfo] {
        if let openCLDevices { return openCLDevices }
        var found: [OpenCLDeviceInfo] = []
        do {
            for platform in try CLPlatform.all() {
                do {
                    for device in try platform.devices() {
                        found.append(OpenCLDeviceInfo(index: found.count, device: device))
                    }
                } catch {
                    discoveryProblem = "platform \(platform.name): \(error)"
                }
            }
            if found.isEmpty && discoveryProblem == nil { discoveryProblem = "no OpenCL platform offers a device" }
        } catch {
            discoveryProblem = "no OpenCL platform (\(error))"
        }
        openCLDevices = found
        return found
    }

    /// The OpenCL device `opencl:index` as an Opal device (its context and queue are created once).
    public func openCL(_ index: Int) throws -> Device {
        lock.lock(); defer { lock.unlock() }
        let devices = discoverLocked()
        guard devices.indices.contains(index) else {
            throw DeviceError.noSuchOpenCLDevice(index: index, available: devices.count, detail: discoveryProblem ?? "")
        }
        if let existing = openCLBackends[index] { return existing }
        do {
            let device = Device(backend: try OpenCLBackend(device: devices[index].device, index: index))
            openCLBackends[index] = device
            return device
        } catch {
            throw DeviceError.unavailable("opencl:\(index) (\(devices[index].device.name)) could not be opened: \(error)")
        }
    }

    /// The default device and the reason it was chosen: the best GPU, else the native CPU.
    public func defaultChoice() -> (request: DeviceRequest, reason: String) {
        let devices = openCL
        if let best = devices.filter({ $0.device.type == .gpu }).max(by: { $0.score < $1.score }) {
            return (.openCL(best.index), "the GPU with the most compute units × clock")
        }
        if devices.isEmpty {
            return (.cpu, "no OpenCL device (\(discoveryMessage ?? "none found")), so the native CPU backend")
        }
        return (.cpu, "no GPU among the OpenCL devices, so the native CPU backend (faster than OpenCL on a CPU)")
    }

    /// Resolves a request to a device. `auto` falls back to the CPU with one message on stderr
    /// when the chosen GPU cannot be opened; `gpu` without a GPU is an error.
    public func device(for request: DeviceRequest) throws -> Device {
        switch request {
        case .cpu:
            return cpu
        case .openCL(let index):
            return try openCL(index)
        case .gpu:
            let devices = openCL
            guard let best = devices.filter({ $0.device.type == .gpu }).max(by: { $0.score < $1.score }) else {
                throw DeviceError.noGPU(devices.isEmpty ? (discoveryMessage ?? "no OpenCL device")
                                        : "the OpenCL devices are: " + devices.map(\.device.name).joined(separator: ", "))
            }
            return try openCL(best.index)
        case .automatic:
            let choice = defaultChoice()
            if case .openCL(let index) = choice.request {
                do { return try openCL(index) } catch {
                    announce("opal: \(error); falling back to the native CPU backend")
                    return cpu
                }
            }
            if let problem = discoveryMessage, openCL.isEmpty {
                announce("opal: \(problem); using the native CPU backend (install pocl-opencl-icd or your GPU vendor's OpenCL driver)")
            }
            return cpu
        }
    }

    private func announce(_ message: String) {
        lock.lock(); defer { lock.unlock() }
        guard !announced else { return }
        announced = true
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}

extension Device {
    /// The native CPU backend.
    public static var cpu: Device { DeviceRegistry.shared.cpu }

    /// The best GPU, else the native CPU (never fails: a broken GPU driver falls back with a message).
    public static var best: Device {
        (try? DeviceRegistry.shared.device(for: .automatic)) ?? DeviceRegistry.shared.cpu
    }

    /// The N-th OpenCL device (as numbered by `opal devices`).
    public static func openCL(_ index: Int) throws -> Device { try DeviceRegistry.shared.openCL(index) }

    /// Resolves `auto`, `gpu`, `cpu` or `opencl:N`.
    public static func named(_ text: String) throws -> Device {
        try DeviceRegistry.shared.device(for: DeviceRequest(parsing: text))
    }

    /// `OPAL_DEVICE` when set, else `auto`.
    public static func fromEnvironment() throws -> Device {
        try named(ProcessInfo.processInfo.environment["OPAL_DEVICE"] ?? "auto")
    }
}
