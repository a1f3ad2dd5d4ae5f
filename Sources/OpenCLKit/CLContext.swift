import COpenCL

/// An OpenCL context holding exactly one device.
///
/// `@unchecked Sendable`: OpenCL contexts are thread-safe (all `cl*` calls taking a context may be
/// made from any thread) and the stored properties are immutable.
public final class CLContext: @unchecked Sendable {
    /// The raw context handle, released in `deinit`.
    public let raw: cl_context
    /// The context's only device.
    public let device: CLDevice

    /// Creates a context for `device`.
    public init(device: CLDevice) throws {
        var status: cl_int = CL_SUCCESS
        var deviceID: cl_device_id? = device.id
        let context = clCreateContext(nil, 1, &deviceID, nil, nil, &status)
        try check(status, "clCreateContext")
        guard let context else { throw CLError.status(code: CL_INVALID_CONTEXT, operation: "clCreateContext") }
        self.raw = context
        self.device = device
    }

    /// A context on the default device (`CLPlatform.defaultDevice()`).
    public convenience init() throws {
        try self.init(device: CLPlatform.defaultDevice())
    }

    deinit {
        clReleaseContext(raw)
    }
}
