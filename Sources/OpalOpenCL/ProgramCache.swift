import Foundation
import OpenCLKit

/// Programs compiled once per device + options; binaries cached on disk under
/// $OPAL_CACHE_DIR/programs (default ~/.cache/opal/programs), keyed by device name, driver version,
/// options and source hash. A corrupt or stale entry is rebuilt (never trusted), writes are atomic.
///
/// On-disk entry `<fnv1a64 hex>.bin`, where the hash covers platform, device name, device version,
/// driver version, options and source:
///
///     "OPALBIN1" | payload length: UInt64 LE | FNV-1a-64 of payload: UInt64 LE | payload (device binary)
///
/// Any mismatch on reading (magic, length, checksum, or the driver rejecting the binary) deletes the
/// file and compiles from source. Disk failures never fail a build; they only cost a compile.
///
/// `@unchecked Sendable`: every mutable map and counter is guarded by `lock`. Compiles happen under
/// the lock, so concurrent requests for one program compile it once. Cached `CLKernel`s are shared:
/// a kernel returned by `kernel(source:options:name:)` must be used by one thread at a time
/// (`clSetKernelArg` is not thread-safe).
public final class ProgramCache: @unchecked Sendable {
    /// The context programs are built for.
    public let context: CLContext
    /// Where binaries are stored, or nil when disk caching is off (no usable directory).
    public let directory: URL?

    private let lock = NSLock()
    private var programs: [ProgramKey: CLProgram] = [:]
    private var kernels: [KernelKey: CLKernel] = [:]
    private var _diskHits = 0
    private var _builds = 0
    private var _diskRejections = 0

    /// Number of programs loaded from a valid on-disk binary.
    public var diskHits: Int { lock.withLock { _diskHits } }
    /// Number of programs compiled from source.
    public var builds: Int { lock.withLock { _builds } }
    /// Number of on-disk entries found corrupt or rejected by the driver (each deleted and rebuilt).
    public var diskRejections: Int { lock.withLock { _diskRejections } }

    /// - Parameters:
    ///   - context: the context (and so the device) programs are built for.
    ///   - directory: the folder for binaries; nil means `$OPAL_CACHE_DIR/programs`, or
    ///     `~/.cache/opal/programs` when `OPAL_CACHE_DIR` is unset. It is created on first write.
    public init(context: CLContext, directory: URL? = nil) {
        self.context = context
        self.directory = directory ?? ProgramCache.defaultDirectory()
    }

    /// `$OPAL_CACHE_DIR/programs`, else `~/.cache/opal/programs`; nil when neither can be determined.
    public static func defaultDirectory() -> URL? {
        if let value = getenv("OPAL_CACHE_DIR"), value.pointee != 0 {
            return URL(fileURLWithPath: String(cString: value), isDirectory: true).appending(path: "programs")
        }
        let home = FileManager.default.homeDirectoryForCurrentUser
        return home.appending(path: ".cache/opal/programs")
    }

    /// The built program for `source` compiled with `options`: from memory, else from a valid disk
    /// entry, else compiled (and written to disk).
    /// - Throws: `CLError.buildFailed` with the build log when the source does not compile.
    public func program(source: String, options: String) throws -> CLProgram {
        try lock.withLock { try lockedProgram(source: source, options: options) }
    }

    /// The kernel `name` of `program(source:options:)`, created once and reused.
    /// The returned kernel is shared: set its arguments and enqueue it from one thread at a time.
    public func kernel(source: String, options: String, name: String) throws -> CLKernel {
        try lock.withLock {
            let program = try lockedProgram(source: source, options: options)
            let key = KernelKey(program: ObjectIdentifier(program), name: name)
            if let kernel = kernels[key] { return kernel }
            let kernel = try CLKernel(program: program, name: name)
            kernels[key] = kernel
            return kernel
        }
    }

    /// The on-disk file that holds (or would hold) the binary of `source` with `options`.
    public func cacheFile(source: String, options: String) -> URL? {
        let device = context.device
        var hasher = FNV1a64()
        for part in [device.platformName, device.name, device.version, device.driverVersion, options, source] {
            hasher.combine(part.utf8)
            hasher.combine([0])  // separator, so ("ab", "c") ≠ ("a", "bc")
        }
        return directory?.appending(path: String(format: "%016llx.bin", hasher.value))
    }

    // MARK: - Under the lock

    private func lockedProgram(source: String, options: String) throws -> CLProgram {
        let key = ProgramKey(source: source, options: options)
        if let program = programs[key] { return program }
        let file = cacheFile(source: source, options: options)
        if let file, let program = loadFromDisk(file, options: options) {
            _diskHits += 1
            programs[key] = program
            return program
        }
        let program = try CLProgram(context: context, source: source)
        try program.build(options: options)
        _builds += 1
        programs[key] = program
        if let file, let binary = try? program.binary() {
            store(binary, at: file)
        }
        return program
    }

    /// A program built from the entry at `file`, or nil (after deleting a bad entry).
    private func loadFromDisk(_ file: URL, options: String) -> CLProgram? {
        let path = file.path(percentEncoded: false)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path),
              let payload = ProgramCache.decode(data),
              let program = try? CLProgram(context: context, binary: payload),
              (try? program.build(options: options)) != nil
        else {
            _diskRejections += 1
            try? FileManager.default.removeItem(atPath: path)
            return nil
        }
        return program
    }

    /// Writes `binary` to `file` atomically (temporary file in the same folder, then rename).
    /// Failures are ignored: the cache is an optimisation.
    private func store(_ binary: [UInt8], at file: URL) {
        let folder = file.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let temporary = folder.appending(path: ".\(file.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
            let temporaryPath = temporary.path(percentEncoded: false)
            guard FileManager.default.createFile(atPath: temporaryPath, contents: ProgramCache.encode(binary)) else { return }
            if rename(temporaryPath, file.path(percentEncoded: false)) != 0 {
                try? FileManager.default.removeItem(atPath: temporaryPath)
            }
        } catch {
            return
        }
    }

    // MARK: - File format

    static let magic = Array("OPALBIN1".utf8)
    static let headerSize = 8 + 8 + 8

    /// `magic | length | checksum | payload`, integers little-endian.
    static func encode(_ payload: [UInt8]) -> Data {
        var data = Data(magic)
        var hasher = FNV1a64()
        hasher.combine(payload)
        withUnsafeBytes(of: UInt64(payload.count).littleEndian) { data.append(contentsOf: $0) }
        withUnsafeBytes(of: hasher.value.littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: payload)
        return data
    }

    /// The payload of a well-formed entry, or nil on any mismatch (magic, length, checksum).
    static func decode(_ data: Data) -> [UInt8]? {
        let bytes = [UInt8](data)
        guard bytes.count >= headerSize, Array(bytes[0..<8]) == magic else { return nil }
        func uint64(at offset: Int) -> UInt64 {
            bytes[offset..<offset + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) }
        }
        let length = uint64(at: 8)
        let checksum = uint64(at: 16)
        guard length > 0, length == UInt64(bytes.count - headerSize) else { return nil }
        let payload = Array(bytes[headerSize...])
        var hasher = FNV1a64()
        hasher.combine(payload)
        guard hasher.value == checksum else { return nil }
        return payload
    }
}

private struct ProgramKey: Hashable {
    let source: String
    let options: String
}

private struct KernelKey: Hashable {
    let program: ObjectIdentifier  // programs are never evicted, so identifiers stay unique
    let name: String
}

/// 64-bit FNV-1a: `hash = (hash ^ byte) · 0x100000001b3`, starting from 0xcbf29ce484222325.
/// Stable across runs and platforms (unlike `Hasher`), so usable for file names and checksums.
struct FNV1a64 {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func combine<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        for byte in bytes {
            value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
    }
}
