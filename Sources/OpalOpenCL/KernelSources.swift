import Foundation

/// Why a kernel source could not be produced.
public enum KernelSourcesError: Error, CustomStringConvertible, Equatable {
    /// No kernel file of that name is embedded (or present in `OPAL_KERNELS_DIR`).
    case unknownKernel(name: String, available: [String])
    /// `OPAL_KERNELS_DIR` is set but `<dir>/<name>.cl` could not be read as UTF-8 text.
    case unreadable(path: String)

    public var description: String {
        switch self {
        case .unknownKernel(let name, let available):
            return "unknown kernel source '\(name)'; available: \(available.joined(separator: ", "))"
        case .unreadable(let path):
            return "cannot read kernel source \(path) (from OPAL_KERNELS_DIR)"
        }
    }
}

/// Kernel sources: `Kernels/<name>.cl` embedded at build time by the EmbedKernels plugin;
/// OPAL_KERNELS_DIR (if set) makes `source(named:)` read `<dir>/<name>.cl` from disk instead,
/// so kernels can be edited without rebuilding.
public enum KernelSources {
    /// The environment variable naming a folder of `.cl` files that overrides the embedded ones.
    public static let overrideVariable = "OPAL_KERNELS_DIR"

    /// The OpenCL C source of `Kernels/<name>.cl` (name without `.cl`).
    /// - Throws: `KernelSourcesError.unknownKernel` when there is no such kernel,
    ///   `.unreadable` when the override folder's file exists but cannot be read.
    public static func source(named name: String) throws -> String {
        if let directory = overrideDirectory {
            let path = directory.appending(path: "\(name).cl").path(percentEncoded: false)
            guard FileManager.default.fileExists(atPath: path) else {
                throw KernelSourcesError.unknownKernel(name: name, available: names)
            }
            guard let data = FileManager.default.contents(atPath: path),
                  let text = String(data: data, encoding: .utf8) else {
                throw KernelSourcesError.unreadable(path: path)
            }
            return text
        }
        guard let text = embeddedKernelSources[name] else {
            throw KernelSourcesError.unknownKernel(name: name, available: names)
        }
        return text
    }

    /// The names of every available kernel source, sorted: the `.cl` files of `OPAL_KERNELS_DIR`
    /// when it is set, the embedded ones otherwise.
    public static var names: [String] {
        if let directory = overrideDirectory {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path(percentEncoded: false))) ?? []
            return files.filter { $0.hasSuffix(".cl") }.map { String($0.dropLast(3)) }.sorted()
        }
        return embeddedKernelSources.keys.sorted()
    }

    /// The embedded sources, ignoring `OPAL_KERNELS_DIR`.
    public static var embeddedNames: [String] {
        embeddedKernelSources.keys.sorted()
    }

    private static var overrideDirectory: URL? {
        guard let value = getenv(overrideVariable), value.pointee != 0 else { return nil }
        return URL(fileURLWithPath: String(cString: value), isDirectory: true)
    }
}
