/// A place where tensors live and ops run: one backend (the native CPU, or one OpenCL device).
///
/// Devices compare by identity; the registry in module `Opal` hands out one `Device` per backend,
/// so `Device.cpu == Device.cpu`. Tensors on different devices never mix implicitly.
public final class Device: Hashable, Sendable, CustomStringConvertible {
    public let backend: any Backend

    public init(backend: any Backend) { self.backend = backend }

    /// Stable short name, e.g. "cpu" or "opencl:0".
    public var name: String { backend.name }
    public var kind: DeviceKind { backend.kind }
    public var description: String { "\(backend.name) (\(backend.deviceDescription))" }

    /// Waits until all work enqueued on this device has finished.
    public func synchronize() throws { try backend.synchronize() }

    public static func == (lhs: Device, rhs: Device) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}
