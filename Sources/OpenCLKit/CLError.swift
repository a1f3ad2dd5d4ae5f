import COpenCL

/// Every failure of an OpenCL call, named.
///
/// `status` carries the raw OpenCL status code and the C function that returned it, e.g.
/// `clBuildProgram failed: CL_BUILD_PROGRAM_FAILURE (-11)`.
public enum CLError: Error, CustomStringConvertible, Equatable {
    /// An OpenCL call returned a status other than `CL_SUCCESS`.
    case status(code: Int32, operation: String)
    /// `clBuildProgram` failed; `log` is the compiler's build log for the device.
    case buildFailed(log: String, options: String)
    /// The ICD loader is present but reports no platform (`CL_PLATFORM_NOT_FOUND_KHR`, -1001).
    case noPlatform
    /// No OpenCL device is available.
    case noDevice
    /// A Swift-side argument was invalid before any OpenCL call was made.
    case invalidArgument(String)
    /// A device allocation could not be satisfied, even after releasing cached buffers.
    ///
    /// - Parameters:
    ///   - requestedBytes: the size of the failed request.
    ///   - cachedBytes: bytes held in free lists by the allocator at the time of failure.
    ///   - liveBytes: bytes handed out and not yet recycled.
    ///   - deviceBytes: the device's global memory size.
    case outOfMemory(requestedBytes: Int, cachedBytes: Int, liveBytes: Int, deviceBytes: UInt64)

    /// The OpenCL status code behind this error, when there is one.
    public var code: Int32? {
        switch self {
        case .status(let code, _): return code
        case .buildFailed: return CL_BUILD_PROGRAM_FAILURE
        case .noPlatform: return -1001
        case .noDevice: return CL_DEVICE_NOT_FOUND
        case .invalidArgument: return nil
        case .outOfMemory: return CL_MEM_OBJECT_ALLOCATION_FAILURE
        }
    }

    public var description: String {
        switch self {
        case .status(let code, let operation):
            return "\(operation) failed: \(CLError.name(of: code)) (\(code))"
        case .buildFailed(let log, let options):
            return "OpenCL program build failed (options: \"\(options)\"):\n\(log)"
        case .noPlatform:
            return "no OpenCL platform found (CL_PLATFORM_NOT_FOUND_KHR, -1001); is an ICD such as PoCL installed?"
        case .noDevice:
            return "no OpenCL device found"
        case .invalidArgument(let message):
            return "invalid argument: \(message)"
        case .outOfMemory(let requested, let cached, let live, let device):
            return "out of device memory: requested \(formatBytes(UInt64(max(requested, 0)))) (\(requested) bytes); "
                + "\(formatBytes(UInt64(live))) live, \(formatBytes(UInt64(cached))) cached, "
                + "device global memory \(formatBytes(device))"
        }
    }

    /// The `cl.h` (and `cl_ext.h`/KHR) name of an OpenCL status code, e.g. `CL_INVALID_VALUE` for -30.
    /// Unknown codes are named `CL_UNKNOWN_ERROR`.
    public static func name(of code: Int32) -> String {
        statusNames[code] ?? "CL_UNKNOWN_ERROR"
    }

    private static let statusNames: [Int32: String] = [
        0: "CL_SUCCESS",
        -1: "CL_DEVICE_NOT_FOUND",
        -2: "CL_DEVICE_NOT_AVAILABLE",
        -3: "CL_COMPILER_NOT_AVAILABLE",
        -4: "CL_MEM_OBJECT_ALLOCATION_FAILURE",
        -5: "CL_OUT_OF_RESOURCES",
        -6: "CL_OUT_OF_HOST_MEMORY",
        -7: "CL_PROFILING_INFO_NOT_AVAILABLE",
        -8: "CL_MEM_COPY_OVERLAP",
        -9: "CL_IMAGE_FORMAT_MISMATCH",
        -10: "CL_IMAGE_FORMAT_NOT_SUPPORTED",
        -11: "CL_BUILD_PROGRAM_FAILURE",
        -12: "CL_MAP_FAILURE",
        -13: "CL_MISALIGNED_SUB_BUFFER_OFFSET",
        -14: "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST",
        -15: "CL_COMPILE_PROGRAM_FAILURE",
        -16: "CL_LINKER_NOT_AVAILABLE",
        -17: "CL_LINK_PROGRAM_FAILURE",
        -18: "CL_DEVICE_PARTITION_FAILED",
        -19: "CL_KERNEL_ARG_INFO_NOT_AVAILABLE",
        -30: "CL_INVALID_VALUE",
        -31: "CL_INVALID_DEVICE_TYPE",
        -32: "CL_INVALID_PLATFORM",
        -33: "CL_INVALID_DEVICE",
        -34: "CL_INVALID_CONTEXT",
        -35: "CL_INVALID_QUEUE_PROPERTIES",
        -36: "CL_INVALID_COMMAND_QUEUE",
        -37: "CL_INVALID_HOST_PTR",
        -38: "CL_INVALID_MEM_OBJECT",
        -39: "CL_INVALID_IMAGE_FORMAT_DESCRIPTOR",
        -40: "CL_INVALID_IMAGE_SIZE",
        -41: "CL_INVALID_SAMPLER",
        -42: "CL_INVALID_BINARY",
        -43: "CL_INVALID_BUILD_OPTIONS",
        -44: "CL_INVALID_PROGRAM",
        -45: "CL_INVALID_PROGRAM_EXECUTABLE",
        -46: "CL_INVALID_KERNEL_NAME",
        -47: "CL_INVALID_KERNEL_DEFINITION",
        -48: "CL_INVALID_KERNEL",
        -49: "CL_INVALID_ARG_INDEX",
        -50: "CL_INVALID_ARG_VALUE",
        -51: "CL_INVALID_ARG_SIZE",
        -52: "CL_INVALID_KERNEL_ARGS",
        -53: "CL_INVALID_WORK_DIMENSION",
        -54: "CL_INVALID_WORK_GROUP_SIZE",
        -55: "CL_INVALID_WORK_ITEM_SIZE",
        -56: "CL_INVALID_GLOBAL_OFFSET",
        -57: "CL_INVALID_EVENT_WAIT_LIST",
        -58: "CL_INVALID_EVENT",
        -59: "CL_INVALID_OPERATION",
        -60: "CL_INVALID_GL_OBJECT",
        -61: "CL_INVALID_BUFFER_SIZE",
        -62: "CL_INVALID_MIP_LEVEL",
        -63: "CL_INVALID_GLOBAL_WORK_SIZE",
        -64: "CL_INVALID_PROPERTY",
        -65: "CL_INVALID_IMAGE_DESCRIPTOR",
        -66: "CL_INVALID_COMPILER_OPTIONS",
        -67: "CL_INVALID_LINKER_OPTIONS",
        -68: "CL_INVALID_DEVICE_PARTITION_COUNT",
        -69: "CL_INVALID_PIPE_SIZE",
        -70: "CL_INVALID_DEVICE_QUEUE",
        -71: "CL_INVALID_SPEC_ID",
        -72: "CL_MAX_SIZE_RESTRICTION_EXCEEDED",
        -1000: "CL_INVALID_GL_SHAREGROUP_REFERENCE_KHR",
        -1001: "CL_PLATFORM_NOT_FOUND_KHR",
        -1002: "CL_INVALID_D3D10_DEVICE_KHR",
        -1003: "CL_INVALID_D3D10_RESOURCE_KHR",
        -1004: "CL_D3D10_RESOURCE_ALREADY_ACQUIRED_KHR",
        -1005: "CL_D3D10_RESOURCE_NOT_ACQUIRED_KHR",
        -1006: "CL_INVALID_D3D11_DEVICE_KHR",
        -1007: "CL_INVALID_D3D11_RESOURCE_KHR",
        -1008: "CL_D3D11_RESOURCE_ALREADY_ACQUIRED_KHR",
        -1009: "CL_D3D11_RESOURCE_NOT_ACQUIRED_KHR",
        -1010: "CL_INVALID_DX9_MEDIA_ADAPTER_KHR",
        -1011: "CL_INVALID_DX9_MEDIA_SURFACE_KHR",
        -1012: "CL_DX9_MEDIA_SURFACE_ALREADY_ACQUIRED_KHR",
        -1013: "CL_DX9_MEDIA_SURFACE_NOT_ACQUIRED_KHR",
        -1057: "CL_DEVICE_PARTITION_FAILED_EXT",
        -1058: "CL_INVALID_PARTITION_COUNT_EXT",
        -1059: "CL_INVALID_PARTITION_NAME_EXT",
        -1092: "CL_EGL_RESOURCE_NOT_ACQUIRED_KHR",
        -1093: "CL_INVALID_EGL_OBJECT_KHR",
        -1121: "CL_CONTEXT_TERMINATED_KHR",
    ]
}

/// The one status checker: turns a non-success OpenCL status into a named `CLError`.
@inline(__always)
func check(_ status: cl_int, _ operation: String) throws {
    if status != CL_SUCCESS {
        throw CLError.status(code: status, operation: operation)
    }
}

/// "1.5 GiB"-style rendering of a byte count, for error messages.
func formatBytes(_ bytes: UInt64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) bytes" }
    let rounded = (value * 10).rounded() / 10
    return "\(rounded) \(units[unit])"
}
