import Foundation
import OpenCLKit

/// Tile sizes of the fast GEMM kernel (`gemm_fast` in `Kernels/gemm.cl`), compiled in as `-D` options.
///
/// A work-group computes a `tileM × tileN` tile of C; each work-item a `workPerItemM × workPerItemN` block
/// held in `vectorWidth`-wide vector registers. With `stagesThroughLocalMemory`, A and B pass through
/// local memory `tileK` deep (GPUs); without, the kernel reads them straight from global memory (CPU
/// devices, where local memory is ordinary cache and barriers cost), and the host packs a transposed B first.
public struct GemmParameters: Hashable, Sendable, CustomStringConvertible {
    public var tileM: Int, tileN: Int, tileK: Int
    public var workPerItemM: Int, workPerItemN: Int
    /// Lanes of the accumulator vectors: 2, 4, 8 or 16, dividing `workPerItemN`.
    public var vectorWidth: Int
    public var stagesThroughLocalMemory: Bool
    /// The engine `OpenCLBackend.gemm` uses unless told otherwise.
    public var preferredEngine: OpenCLBackend.GemmEngine

    public init(tileM: Int, tileN: Int, tileK: Int, workPerItemM: Int, workPerItemN: Int, vectorWidth: Int,
                stagesThroughLocalMemory: Bool, preferredEngine: OpenCLBackend.GemmEngine) {
        self.tileM = tileM; self.tileN = tileN; self.tileK = tileK
        self.workPerItemM = workPerItemM; self.workPerItemN = workPerItemN; self.vectorWidth = vectorWidth
        self.stagesThroughLocalMemory = stagesThroughLocalMemory; self.preferredEngine = preferredEngine
    }

    /// Work-group shape `[tileN / workPerItemN, tileM / workPerItemM]`.
    public var workGroup: [Int] { [tileN / workPerItemN, tileM / workPerItemM] }

    /// Whether the kernel can be compiled with these values (divisibility, vector width, group size).
    public func isValid(maximumWorkGroupSize: Int) -> Bool {
        [2, 4, 8, 16].contains(vectorWidth) && workPerItemN % vectorWidth == 0
            && workPerItemM > 0 && workPerItemN > 0 && tileK > 0
            && tileM % workPerItemM == 0 && tileN % workPerItemN == 0
            && workGroup.reduce(1, *) <= maximumWorkGroupSize
    }

    public var buildOptions: String {
        "-DGEMM_MWG=\(tileM) -DGEMM_NWG=\(tileN) -DGEMM_KWG=\(tileK) -DGEMM_WPTM=\(workPerItemM) "
            + "-DGEMM_WPTN=\(workPerItemN) -DGEMM_VW=\(vectorWidth) -DGEMM_LOCAL=\(stagesThroughLocalMemory ? 1 : 0)"
    }

    public var description: String {
        "\(tileM)×\(tileN)×\(tileK) tiles, \(workPerItemM)×\(workPerItemN) per work-item, float\(vectorWidth), "
            + (stagesThroughLocalMemory ? "local memory" : "direct reads") + ", default engine \(preferredEngine)"
    }

    /// The environment variable that replaces the table's entry (for tuning and tests).
    public static let overrideVariable = "OPAL_GEMM_PARAMETERS"

    /// Parses `portable`, `cpu`, `cpuAVX512`, or seven comma-separated numbers
    /// `tileM,tileN,tileK,workPerItemM,workPerItemN,vectorWidth,local` (local 0 or 1; the engine is `.opal`).
    public init?(specification: String) {
        switch specification {
        case "portable": self = .portable
        case "cpu": self = .cpu
        case "cpuAVX512": self = .cpuAVX512
        default:
            let values = specification.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard values.count == 7, values[6] == 0 || values[6] == 1 else { return nil }
            self.init(tileM: values[0], tileN: values[1], tileK: values[2], workPerItemM: values[3],
                      workPerItemN: values[4], vectorWidth: values[5], stagesThroughLocalMemory: values[6] == 1,
                      preferredEngine: .opal)
        }
    }

    /// Portable: 64×64 tiles through local memory, 4×4 per work-item (256 work-items), CLBlast preferred
    /// (Opal's kernel has not been measured against CLBlast on a GPU yet).
    public static let portable = GemmParameters(tileM: 64, tileN: 64, tileK: 16, workPerItemM: 4, workPerItemN: 4,
                                                vectorWidth: 4, stagesThroughLocalMemory: true,
                                                preferredEngine: .clblast)
    /// CPU devices (PoCL): direct reads, 8×16 blocks in 8-wide vectors (16 accumulator registers of AVX2).
    public static let cpu = GemmParameters(tileM: 64, tileN: 64, tileK: 16, workPerItemM: 8, workPerItemN: 16,
                                           vectorWidth: 8, stagesThroughLocalMemory: false, preferredEngine: .opal)
    /// AVX-512 CPUs: 8×32 blocks in two 16-wide vectors per row (16 of the 32 zmm registers);
    /// about 10× CLBlast at 1024³ on PoCL (2 cores).
    public static let cpuAVX512 = GemmParameters(tileM: 64, tileN: 64, tileK: 16, workPerItemM: 8, workPerItemN: 32,
                                                 vectorWidth: 16, stagesThroughLocalMemory: false,
                                                 preferredEngine: .opal)
}

/// The per-device table: the most specific matching entry wins (default → device type → vendor →
/// device name). Matching is by case-insensitive substring.
enum KernelParameterTable {
    struct Entry: Sendable {
        var type: CLDeviceType?
        var vendor: String?
        var deviceName: String?
        var gemm: GemmParameters

        /// 0 = no match; otherwise higher is more specific.
        func specificity(type deviceType: CLDeviceType, vendor deviceVendor: String, name: String) -> Int {
            if let type, type != deviceType { return 0 }
            if let vendor, !deviceVendor.localizedCaseInsensitiveContains(vendor) { return 0 }
            if let deviceName, !name.localizedCaseInsensitiveContains(deviceName) { return 0 }
            return 1 + (type == nil ? 0 : 1) + (vendor == nil ? 0 : 2) + (deviceName == nil ? 0 : 4)
        }
    }

    static let entries: [Entry] = [
        Entry(gemm: .portable),
        Entry(type: .cpu, gemm: .cpu),
        // PoCL names its CPU device after the LLVM target, e.g. "pthread-skylake-avx512-AMD EPYC".
        Entry(type: .cpu, deviceName: "avx512", gemm: .cpuAVX512),
    ]

    static func gemm(type: CLDeviceType, vendor: String, name: String) -> GemmParameters {
        var best = GemmParameters.portable, bestScore = 0
        for entry in entries {
            let score = entry.specificity(type: type, vendor: vendor, name: name)
            if score > bestScore { best = entry.gemm; bestScore = score }
        }
        return best
    }
}

/// Launch parameters compiled into the programs (`-D` options), from the per-device table.
struct OpenCLKernelParameters: Hashable, Sendable {
    /// Work-group size of the 1-D kernels and the largest work-group of the row kernels (a power of two).
    var workGroupSize = 256
    /// Edge of the square tile of the reference GEMM kernel `gemm_tiled` (`tile²` work-items per group).
    var gemmTile = 16
    /// The fast GEMM kernel's tiles.
    var gemm = GemmParameters.portable

    /// The table's entry for `device` (or OPAL_GEMM_PARAMETERS, see `GemmParameters.init?(specification:)`),
    /// shrunk to the device's work-group limit.
    init(device: CLDevice) {
        self.init(maximumWorkGroupSize: device.maxWorkGroupSize)
        var chosen = KernelParameterTable.gemm(type: device.type, vendor: device.vendor, name: device.name)
        if let text = ProcessInfo.processInfo.environment[GemmParameters.overrideVariable],
           let override = GemmParameters(specification: text) {
            chosen = override
        }
        if !chosen.isValid(maximumWorkGroupSize: device.maxWorkGroupSize) {
            // Small work-groups: 32×32 tiles of 4×4 (64 work-items), then 8×8 tiles of 4×4 (4 work-items).
            chosen.tileM = 32; chosen.tileN = 32; chosen.workPerItemM = 4; chosen.workPerItemN = 4
            chosen.vectorWidth = 4
            if !chosen.isValid(maximumWorkGroupSize: device.maxWorkGroupSize) { chosen.tileM = 8; chosen.tileN = 8 }
        }
        gemm = chosen
    }

    /// Device-independent values (the portable GEMM entry) under a work-group limit.
    init(maximumWorkGroupSize: Int) {
        workGroupSize = largestPowerOfTwo(atMost: min(256, max(1, maximumWorkGroupSize)))
        gemmTile = 1
        while (gemmTile * 2) * (gemmTile * 2) <= workGroupSize && gemmTile < 16 { gemmTile *= 2 }
        if !gemm.isValid(maximumWorkGroupSize: maximumWorkGroupSize) {
            gemm.tileM = 8; gemm.tileN = 8
        }
    }

    var buildOptions: String { "-cl-std=CL1.2 -DWGS=\(workGroupSize) -DTILE=\(gemmTile) \(gemm.buildOptions)" }
}
