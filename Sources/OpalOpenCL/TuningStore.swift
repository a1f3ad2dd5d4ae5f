import Foundation
import OpenCLKit

/// The kernel families `opal bench tune` searches, and the knob each one tunes.
public enum KernelFamily: String, CaseIterable, Codable, Sendable {
    /// `GemmParameters` of `gemm_fast` (tiles, work per item, vector width, local memory).
    case gemm
    /// `ConvParameters` of `conv_forward_implicit_rows` (CONV_VM, work-group size).
    case conv
    /// `AttentionParameters` of the fused attention kernels (rows per group and item, tiles, vector width).
    case attention
    /// WGS, the work-group size of the 1-D kernels (the LSTM/GRU cell updates, and the element-wise kernels).
    case recurrent
}

/// The outcome of tuning one family on one device.
public struct TunedFamily: Codable, Sendable, Equatable {
    /// The winner in the family's specification format (`GemmParameters.init?(specification:)`,
    /// `AttentionParameters…`, `ConvParameters…`, or the work-group size for `recurrent`); nil when the
    /// built-in parameters won (they stay in use).
    public var parameters: String?
    /// The winner in words.
    public var description: String
    /// Time of the family's shape set with the built-in parameters and with the winner, in milliseconds
    /// (the sum of the per-shape medians).
    public var defaultMilliseconds: Double
    public var tunedMilliseconds: Double
    /// Candidates measured (the built-in parameters included) and rejected (wrong results or build failures).
    public var candidates: Int
    public var rejected: Int
    /// The shapes timed, in words.
    public var shapes: [String]
    public var date: Date

    public init(parameters: String?, description: String, defaultMilliseconds: Double, tunedMilliseconds: Double,
                candidates: Int, rejected: Int, shapes: [String], date: Date = Date()) {
        self.parameters = parameters; self.description = description
        self.defaultMilliseconds = defaultMilliseconds; self.tunedMilliseconds = tunedMilliseconds
        self.candidates = candidates; self.rejected = rejected; self.shapes = shapes; self.date = date
    }

    /// Speed-up of the winner over the built-in parameters in percent: `(default / tuned − 1) · 100`
    /// (+100 % = twice as fast; 0 when the built-in parameters won).
    public var improvementPercent: Double {
        guard tunedMilliseconds > 0 else { return 0 }
        return (defaultMilliseconds / tunedMilliseconds - 1) * 100
    }
}

/// The tuned parameters of one device: the contents of its file in `TuningStore`.
///
///     { "format": 1, "device": "…", "vendor": "…", "driverVersion": "…",
///       "families": { "gemm": { "parameters": "64,64,16,8,32,16,0", "defaultMilliseconds": …, … } } }
public struct TuningRecord: Codable, Sendable, Equatable {
    public static let currentFormat = 1
    public var format: Int
    public var device: String
    public var vendor: String
    public var driverVersion: String
    /// By `KernelFamily.rawValue`; unknown keys (from a newer Opal) are kept but not used.
    public var families: [String: TunedFamily]

    public init(device: String, vendor: String, driverVersion: String, families: [String: TunedFamily] = [:]) {
        format = TuningRecord.currentFormat
        self.device = device; self.vendor = vendor; self.driverVersion = driverVersion; self.families = families
    }

    /// An empty record for `device` (no family tuned: the built-in table applies).
    public init(for device: CLDevice) {
        self.init(device: device.name, vendor: device.vendor, driverVersion: device.driverVersion)
    }

    public subscript(family: KernelFamily) -> TunedFamily? {
        get { families[family.rawValue] }
        set { families[family.rawValue] = newValue }
    }

    /// The tuned values, parsed; nil where a family is not tuned, kept its default, or does not parse.
    public var gemm: GemmParameters? { self[.gemm]?.parameters.flatMap(GemmParameters.init(specification:)) }
    public var attention: AttentionParameters? {
        self[.attention]?.parameters.flatMap(AttentionParameters.init(specification:))
    }
    public var conv: ConvParameters? { self[.conv]?.parameters.flatMap(ConvParameters.init(specification:)) }
    /// The tuned WGS (`recurrent`).
    public var workGroupSize: Int? { self[.recurrent]?.parameters.flatMap { Int($0) } }
}

/// Per-device tuned kernel parameters on disk, beside the program cache: one JSON file per device,
/// `$OPAL_CACHE_DIR/tuning/<device key>.json` (default `~/.cache/opal/tuning`), written by
/// `opal bench tune` and read by every `OpenCLBackend` at creation (precedence: environment override >
/// this file > the built-in `KernelParameterTable`).
///
/// The device key is the device name made file-safe plus a hash of platform, name, vendor and driver
/// version, so a driver update starts untuned. Writes are atomic (temporary file, then rename); a file
/// that cannot be read or decoded is ignored with one warning on stderr, never an error.
public struct TuningStore: Sendable {
    /// The folder of the files, or nil when no folder can be determined.
    public let directory: URL?

    /// - Parameter directory: nil means `$OPAL_CACHE_DIR/tuning`, else `~/.cache/opal/tuning`.
    public init(directory: URL? = nil) {
        self.directory = directory ?? TuningStore.defaultDirectory()
    }

    /// `$OPAL_CACHE_DIR/tuning`, else `~/.cache/opal/tuning`.
    public static func defaultDirectory() -> URL? {
        ProgramCache.defaultDirectory()?.deletingLastPathComponent().appending(path: "tuning")
    }

    /// The built-in parameters for `device` (the table's entry, under its work-group limit; no tuned file), which
    /// `opal bench tune` measures its candidates against.
    public static func builtInParameters(for device: CLDevice)
        -> (gemm: GemmParameters, attention: AttentionParameters, conv: ConvParameters, workGroupSize: Int) {
        let p = OpenCLKernelParameters(device: device, tuning: TuningRecord(for: device))
        return (p.gemm, p.attention, p.conv, p.workGroupSize)
    }

    /// `<name made file-safe, ≤ 48 characters>-<FNV-1a-64 of platform, name, vendor, driver version>`.
    public static func deviceKey(platform: String, name: String, vendor: String, driverVersion: String) -> String {
        var hasher = FNV1a64()
        for part in [platform, name, vendor, driverVersion] {
            hasher.combine(part.utf8)
            hasher.combine([0])
        }
        let safe = String(name.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : "_" }
            .prefix(48))
        return (safe.isEmpty ? "device" : safe) + String(format: "-%016llx", hasher.value)
    }

    /// The file that holds (or would hold) `device`'s record.
    public func file(for device: CLDevice) -> URL? {
        let key = TuningStore.deviceKey(platform: device.platformName, name: device.name, vendor: device.vendor,
                                        driverVersion: device.driverVersion)
        return directory?.appending(path: key + ".json")
    }

    /// `device`'s record, or nil when it has none or the file is unusable (warned about once per file).
    public func record(for device: CLDevice) -> TuningRecord? {
        guard let file = file(for: device) else { return nil }
        return TuningStore.read(file)
    }

    /// The record in `file`, or nil: missing (silently) or unreadable / corrupt / of another format (warned).
    public static func read(_ file: URL) -> TuningRecord? {
        let path = file.path(percentEncoded: false)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let problem: String
        if let data = FileManager.default.contents(atPath: path) {
            do {
                let record = try decoder.decode(TuningRecord.self, from: data)
                if record.format == TuningRecord.currentFormat { return record }
                problem = "format \(record.format), expected \(TuningRecord.currentFormat)"
            } catch {
                problem = "not a tuning record (\(error))"
            }
        } else {
            problem = "cannot be read"
        }
        warnOnce(path: path, "opal: ignoring the tuned kernel parameters in \(path): \(problem); "
                    + "the built-in parameters are used (rerun `opal bench tune`, or delete the file)")
        return nil
    }

    /// Writes `record` as `device`'s file atomically and returns its location.
    /// - Throws: `TuningStoreError.noDirectory`, or the file system's error naming the folder.
    @discardableResult
    public func save(_ record: TuningRecord, for device: CLDevice) throws -> URL {
        guard let file = file(for: device) else { throw TuningStoreError.noDirectory }
        try TuningStore.write(record, to: file)
        return file
    }

    /// Deletes `device`'s file; true when there was one.
    @discardableResult
    public func reset(for device: CLDevice) throws -> Bool {
        guard let file = file(for: device), FileManager.default.fileExists(atPath: file.path(percentEncoded: false))
        else { return false }
        try FileManager.default.removeItem(at: file)
        return true
    }

    /// `record` as pretty JSON into `file`, through a temporary file in the same folder and a rename.
    public static func write(_ record: TuningRecord, to file: URL) throws {
        let folder = file.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(record)
        let temporary = folder.appending(
            path: ".\(file.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        let temporaryPath = temporary.path(percentEncoded: false)
        guard FileManager.default.createFile(atPath: temporaryPath, contents: data) else {
            throw TuningStoreError.writeFailed(path: temporaryPath, reason: "cannot create the file")
        }
        if rename(temporaryPath, file.path(percentEncoded: false)) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporaryPath)
            throw TuningStoreError.writeFailed(path: file.path(percentEncoded: false), reason: reason)
        }
    }

    private static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    private static let warned = WarnedPaths()

    private static func warnOnce(path: String, _ message: String) {
        guard warned.insert(path) else { return }
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}

/// Paths already warned about (each backend creation reads the file; one warning per process is enough).
/// `@unchecked Sendable`: `paths` is only touched under `lock`.
private final class WarnedPaths: @unchecked Sendable {
    private let lock = NSLock()
    private var paths: Set<String> = []
    /// True when `path` was not there yet.
    func insert(_ path: String) -> Bool { lock.withLock { paths.insert(path).inserted } }
}

public enum TuningStoreError: Error, CustomStringConvertible {
    case noDirectory
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case .noDirectory: "no folder for tuned parameters: set OPAL_CACHE_DIR or HOME"
        case let .writeFailed(path, reason): "cannot write the tuned parameters to \(path): \(reason)"
        }
    }
}
