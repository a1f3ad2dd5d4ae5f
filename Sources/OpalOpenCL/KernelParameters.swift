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

    /// The seven numbers `init?(specification:)` parses (the engine is not part of it).
    public var specification: String {
        "\(tileM),\(tileN),\(tileK),\(workPerItemM),\(workPerItemN),\(vectorWidth),\(stagesThroughLocalMemory ? 1 : 0)"
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

/// Tiles of the fused attention kernels (`Kernels/attention.cl`), compiled in as `-D` options together with
/// the head dimension (one program per D).
///
/// A work-group owns `rowsPerGroup` query rows (forward, dQ) or key rows (dK/dV): `rowsPerGroup / rowsPerItem`
/// (`/ keyRowsPerItem`) work-items, each keeping its rows' vectors in private memory (a register tile); the
/// other operands stream through local memory in tiles of T rows: 2 tiles of [T, D] in the forward kernel
/// (Kᵀ, V), 3 in the dQ kernel (Kᵀ, K, Vᵀ), 4 in the dK/dV kernel (Qᵀ, Q, dOᵀ, dO), rows padded to a multiple of
/// `vectorWidth`. T is the largest power of two ≤ `maximumTile` (and ≥ `vectorWidth`) whose tiles fit
/// `localMemoryBytes` (and the device's local memory): 32 at D = 64 and 8–16 at D = 128 with 48 KiB.
public struct AttentionParameters: Hashable, Sendable, CustomStringConvertible {
    /// Rows per work-group (query or key rows), shrunk to the kernel's work-group limit.
    public var rowsPerGroup: Int
    /// The largest tile (rows of K, V or Q, dO per local-memory tile).
    public var maximumTile: Int
    /// Local memory the tiles may take, in bytes (capped further by the device's local memory).
    public var localMemoryBytes: Int
    /// Query rows per work-item in the forward and dQ kernels (`ATTN_ROWS`).
    public var rowsPerItem: Int
    /// Key rows per work-item in the dK/dV kernel (`ATTN_KEY_ROWS`).
    public var keyRowsPerItem: Int
    /// Vector width along tiles and the head dimension (`ATTN_VW`): 4, 8 or 16; halved (to 4 at least) for a
    /// head dimension whose tiles of `vectorWidth` rows would not fit the local memory.
    public var vectorWidth: Int

    public init(rowsPerGroup: Int, maximumTile: Int, localMemoryBytes: Int, rowsPerItem: Int = 1,
                keyRowsPerItem: Int = 1, vectorWidth: Int = 4) {
        self.rowsPerGroup = rowsPerGroup; self.maximumTile = maximumTile; self.localMemoryBytes = localMemoryBytes
        self.rowsPerItem = max(1, rowsPerItem); self.keyRowsPerItem = max(1, keyRowsPerItem)
        self.vectorWidth = [4, 8, 16].contains(vectorWidth) ? vectorWidth : 4
    }

    /// Tile rows (forward keys, dQ keys, dK/dV queries) for head dimension `headDimension` on a device with
    /// `deviceLocalMemory` bytes of local memory (512 bytes of which are left to the compiler); each a power
    /// of two ≥ `vectorWidth`.
    public func tiles(headDimension: Int, deviceLocalMemory: Int) -> (forward: Int, gradientKeys: Int, gradientQueries: Int) {
        let budget = max(0, min(localMemoryBytes, deviceLocalMemory) - 512)
        let padded = (headDimension + vectorWidth - 1) / vectorWidth * vectorWidth
        func fit(_ transposed: Int, _ matrices: Int, extraBytesPerRow: Int) -> Int {
            var tile = largestPowerOfTwo(atMost: max(vectorWidth, maximumTile))
            while tile > vectorWidth
                && tile * ((transposed * headDimension + matrices * padded) * 4 + extraBytesPerRow) > budget {
                tile /= 2
            }
            return tile
        }
        return (fit(1, 1, extraBytesPerRow: 4), fit(2, 1, extraBytesPerRow: 4), fit(2, 2, extraBytesPerRow: 8))
    }

    /// The environment variable that overrides every device's entry (see `init?(specification:)`).
    public static let overrideVariable = "OPAL_ATTENTION_PARAMETERS"

    /// Parses `portable`, `cpu`, or six comma-separated numbers: rows per group, largest tile, local-memory
    /// bytes, rows per item, key rows per item, vector width (for tuning).
    public init?(specification: String) {
        switch specification.trimmingCharacters(in: .whitespaces) {
        case "portable": self = .portable
        case "cpu": self = .cpu
        default:
            let n = specification.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard n.count == 6, n.allSatisfy({ $0 > 0 }) else { return nil }
            self.init(rowsPerGroup: n[0], maximumTile: n[1], localMemoryBytes: n[2], rowsPerItem: n[3],
                      keyRowsPerItem: n[4], vectorWidth: n[5])
        }
    }

    /// The six numbers `init?(specification:)` parses.
    public var specification: String {
        "\(rowsPerGroup),\(maximumTile),\(localMemoryBytes),\(rowsPerItem),\(keyRowsPerItem),\(vectorWidth)"
    }

    /// The bytes of local memory the dK/dV kernel's tiles of T rows take (the most of the three kernels).
    func localBytes(tile: Int, headDimension: Int) -> Int {
        let padded = (headDimension + vectorWidth - 1) / vectorWidth * vectorWidth
        return tile * ((2 * headDimension + 2 * padded) * 4 + 8)
    }

    /// These parameters for head dimension `headDimension`: the vector width halved (to 4 at least) while its
    /// smallest tiles would not fit the local memory.
    public func fitted(headDimension: Int, deviceLocalMemory: Int) -> AttentionParameters {
        var p = self
        let budget = max(0, min(localMemoryBytes, deviceLocalMemory) - 512)
        while p.vectorWidth > 4 && p.localBytes(tile: p.vectorWidth, headDimension: headDimension) > budget {
            p.vectorWidth /= 2
        }
        return p
    }

    /// The `-D` options of attention.cl for head dimension `headDimension` (after `fitted`).
    public func buildOptions(headDimension: Int, deviceLocalMemory: Int) -> String {
        let fitted = fitted(headDimension: headDimension, deviceLocalMemory: deviceLocalMemory)
        guard fitted == self else {
            return fitted.buildOptions(headDimension: headDimension, deviceLocalMemory: deviceLocalMemory)
        }
        let t = tiles(headDimension: headDimension, deviceLocalMemory: deviceLocalMemory)
        return "-DHEAD_DIM=\(headDimension) -DATTN_KEY_TILE=\(t.forward) -DATTN_GRAD_KEY_TILE=\(t.gradientKeys) "
            + "-DATTN_QUERY_TILE=\(t.gradientQueries) -DATTN_VW=\(vectorWidth) -DATTN_ROWS=\(rowsPerItem) "
            + "-DATTN_KEY_ROWS=\(keyRowsPerItem)"
    }

    public var description: String {
        "\(rowsPerGroup) rows per work-group, \(rowsPerItem) (dK/dV: \(keyRowsPerItem)) per work-item, "
            + "\(vectorWidth)-wide vectors, tiles of ≤ \(maximumTile) rows in ≤ \(localMemoryBytes) bytes of local "
            + "memory"
    }

    /// GPUs: 64 rows per work-group, one per work-item (two warps / one wavefront), float4 along tiles and D,
    /// tiles in 48 KiB (the static local memory of an NVIDIA block).
    public static let portable = AttentionParameters(rowsPerGroup: 64, maximumTile: 32, localMemoryBytes: 48 << 10)
    /// CPU devices (PoCL): a work-group is a loop over its work-items, each a register tile of 4 rows × 16
    /// keys (one float16, two AVX2 registers, per row); 512 rows per group amortise the staging of each tile
    /// (shorter sequences get smaller groups); the tiles stay in L1/L2. Measured on PoCL (2 AVX2 cores, K3
    /// N = 1024): 64 rows per group 1.26 s, 256 0.84 s, 512 0.80 s; float8 0.94 s; tiles of 32 keys 1.1 s.
    public static let cpu = AttentionParameters(rowsPerGroup: 512, maximumTile: 16, localMemoryBytes: 64 << 10,
                                                rowsPerItem: 4, keyRowsPerItem: 4, vectorWidth: 16)
}

/// Launch parameters of the CPU-class convolution kernels (`Kernels/conv.cl`): the forward
/// `conv_forward_implicit_rows`, `CONV_VM` output channels × 16 positions per work-item (CONV_VM float16
/// accumulators), and the work-group size along the positions; the backward-weight `conv_backward_weight_rows`,
/// `CONV_BWM` output channels × `CONV_BWK` depths per work-item (CONV_BWM·CONV_BWK float16 accumulators).
/// (The GPU kernel `conv_forward_implicit` keeps its tiles in `ImplicitGemmTiles`.)
public struct ConvParameters: Hashable, Sendable, CustomStringConvertible {
    /// Output channels per work-item (`CONV_VM`), 1 to 32.
    public var channelsPerItem: Int
    /// Work-items per work-group along the output positions (a power of two).
    public var workGroupSize: Int
    /// Backward-weight: output channels (`CONV_BWM`) and depths (`CONV_BWK`) per work-item, 1 to 32 each.
    /// Not part of `specification` (which `opal bench tune conv` stores).
    public var weightChannelsPerItem: Int, weightDepthsPerItem: Int

    public init(channelsPerItem: Int, workGroupSize: Int, weightChannelsPerItem: Int = 8,
                weightDepthsPerItem: Int = 1) {
        self.channelsPerItem = channelsPerItem; self.workGroupSize = workGroupSize
        self.weightChannelsPerItem = weightChannelsPerItem; self.weightDepthsPerItem = weightDepthsPerItem
    }

    /// 8 channels (16 AVX2 / 8 AVX-512 registers of accumulators), groups of 8 work-items; backward-weight
    /// 8 × 1, the same 16 AVX2 registers of accumulators (not measured on an AVX2 machine).
    public static let standard = ConvParameters(channelsPerItem: 8, workGroupSize: 8, weightChannelsPerItem: 8,
                                                weightDepthsPerItem: 1)
    /// AVX-512 CPU devices: 16 channels (16 of the 32 zmm registers), which `opal bench tune conv` chose on
    /// PoCL in two runs out of two (+32 %, +59 % over `standard`, 2026-12-02); backward-weight 16 × 1. K2 on
    /// PoCL (2 cores; 3×3 / 7×7 s2 ms, two runs each where two are given): 16×1 149/116, 138/115; 24×1 156/130;
    /// 12×2 151/133, 149/131; 8×3 191/189; 8×2 151/143; 6×3 248/199; 4×4 188/204.
    public static let cpuAVX512 = ConvParameters(channelsPerItem: 16, workGroupSize: 8, weightChannelsPerItem: 16,
                                                 weightDepthsPerItem: 1)

    /// Whether the kernel can be compiled and launched with these values.
    public func isValid(maximumWorkGroupSize: Int) -> Bool {
        (1...32).contains(channelsPerItem) && workGroupSize > 0 && workGroupSize & (workGroupSize - 1) == 0
            && workGroupSize <= maximumWorkGroupSize
            && (1...32).contains(weightChannelsPerItem) && (1...32).contains(weightDepthsPerItem)
    }

    /// Parses two comma-separated numbers: channels per work-item, work-group size (the backward-weight
    /// block keeps its default).
    public init?(specification: String) {
        let n = specification.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard n.count == 2 else { return nil }
        self.init(channelsPerItem: n[0], workGroupSize: n[1])
    }

    public var specification: String { "\(channelsPerItem),\(workGroupSize)" }
    /// The environment variable that replaces the backward-weight block, "channels,depths" (for tuning).
    public static let weightBlockOverrideVariable = "OPAL_CONV_WEIGHT_BLOCK"
    public var buildOptions: String {
        "-DCONV_VM=\(channelsPerItem) -DCONV_BWM=\(weightChannelsPerItem) -DCONV_BWK=\(weightDepthsPerItem)"
    }
    public var description: String {
        "\(channelsPerItem) output channels × 16 positions per work-item, work-groups of \(workGroupSize); "
            + "backward-weight \(weightChannelsPerItem) channels × \(weightDepthsPerItem) depths per work-item"
    }
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
    /// The fused attention kernels' tiles (`attention.buildOptions(…)` is added to `buildOptions`).
    var attention = AttentionParameters.portable
    /// The CPU-class implicit-GEMM convolution's register block and work-group.
    var conv = ConvParameters.standard

    /// The parameters for `device`, each family from the first of: its environment override
    /// (OPAL_GEMM_PARAMETERS; OPAL_ATTENTION_PARAMETERS is applied at launch, see
    /// `OpenCLBackend.attentionParametersOverride`), the tuned value in `tuning` (by default the device's
    /// file in `TuningStore`, written by `opal bench tune`), the built-in `KernelParameterTable`; the GEMM
    /// tiles shrunk to the device's work-group limit.
    init(device: CLDevice, tuning: TuningRecord? = nil) {
        self.init(maximumWorkGroupSize: device.maxWorkGroupSize)
        let tuning = tuning ?? TuningStore().record(for: device)
        let limit = device.maxWorkGroupSize
        var chosen = KernelParameterTable.gemm(type: device.type, vendor: device.vendor, name: device.name)
        if let tuned = tuning?.gemm, tuned.isValid(maximumWorkGroupSize: limit) { chosen = tuned }
        if let text = ProcessInfo.processInfo.environment[GemmParameters.overrideVariable],
           let override = GemmParameters(specification: text) {
            chosen = override
        }
        if !chosen.isValid(maximumWorkGroupSize: limit) {
            // Small work-groups: 32×32 tiles of 4×4 (64 work-items), then 8×8 tiles of 4×4 (4 work-items).
            chosen.tileM = 32; chosen.tileN = 32; chosen.workPerItemM = 4; chosen.workPerItemN = 4
            chosen.vectorWidth = 4
            if !chosen.isValid(maximumWorkGroupSize: limit) { chosen.tileM = 8; chosen.tileN = 8 }
        }
        gemm = chosen
        attention = tuning?.attention ?? (device.type == .cpu ? .cpu : .portable)
        if device.type == .cpu && device.name.localizedCaseInsensitiveContains("avx512") { conv = .cpuAVX512 }
        // A tuned entry replaces the forward kernel's values; the backward-weight block (not tuned yet) stays the table's.
        if let tuned = tuning?.conv, tuned.isValid(maximumWorkGroupSize: limit) {
            conv = ConvParameters(channelsPerItem: tuned.channelsPerItem, workGroupSize: tuned.workGroupSize,
                                  weightChannelsPerItem: conv.weightChannelsPerItem,
                                  weightDepthsPerItem: conv.weightDepthsPerItem)
        }
        if let text = ProcessInfo.processInfo.environment[ConvParameters.weightBlockOverrideVariable] {
            let n = text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            if n.count == 2, (1...32).contains(n[0]), (1...32).contains(n[1]) {
                conv.weightChannelsPerItem = n[0]; conv.weightDepthsPerItem = n[1]
            }
        }
        if let tuned = tuning?.workGroupSize, tuned > 0, tuned & (tuned - 1) == 0, tuned <= limit {
            workGroupSize = tuned
        }
    }

    /// Device-independent values (the portable GEMM entry) under a work-group limit.
    init(maximumWorkGroupSize: Int) {
        workGroupSize = largestPowerOfTwo(atMost: min(256, max(1, maximumWorkGroupSize)))
        gemmTile = 1
        while (gemmTile * 2) * (gemmTile * 2) <= workGroupSize && gemmTile < 16 { gemmTile *= 2 }
        if !gemm.isValid(maximumWorkGroupSize: maximumWorkGroupSize) {
            gemm.tileM = 8; gemm.tileN = 8
        }
        if !conv.isValid(maximumWorkGroupSize: maximumWorkGroupSize) {
            conv.workGroupSize = largestPowerOfTwo(atMost: max(1, maximumWorkGroupSize))
        }
    }

    var buildOptions: String {
        "-cl-std=CL1.2 -DWGS=\(workGroupSize) -DTILE=\(gemmTile) \(gemm.buildOptions) \(conv.buildOptions)"
    }
}
