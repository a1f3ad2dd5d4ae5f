import CBLAS
import Foundation

/// Which kernel family OpenBLAS runs, and the better one for this CPU when OpenBLAS's detection fails.
///
/// OpenBLAS picks its kernels once, when the library loads (`DYNAMIC_ARCH`), from CPUID, or from the
/// environment variable `OPENBLAS_CORETYPE`. Debian's 0.3.21 does not know newer CPUs (e.g. Sapphire
/// Rapids) and falls back to its generic SSE3 "Prescott" kernels, which run SGEMM several times slower
/// than the AVX-512 ("SkylakeX") or AVX2 ("Haswell") ones the CPU supports. The choice cannot be changed
/// after loading: the `opal` CLI re-executes itself with `OPENBLAS_CORETYPE` set (see `recommendedCoreType`),
/// and `scripts/test` exports it before the tests start.
public enum OpenBLASKernels {
    /// The family in use, e.g. "Haswell", "SkylakeX", "Prescott".
    public static var current: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// OpenBLAS's generic x86-64 families, chosen when it does not recognise the CPU.
    static let genericFamilies: Set<String> = ["Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "unknown"]
    /// Families whose SGEMM uses AVX2 at most.
    static let avx2Families: Set<String> = ["Haswell", "Zen"]

    /// The family to force with `OPENBLAS_CORETYPE`, or nil when OpenBLAS's own choice is fine, the user
    /// already chose one, or the CPU has neither AVX-512 nor AVX2. Forced: SkylakeX or Haswell for a
    /// generic family, and SkylakeX for an AVX2 family on a CPU with AVX-512.
    ///
    /// - Parameters:
    ///   - current: the family OpenBLAS chose
    ///   - cpuFlags: the CPU's feature flags, as in /proc/cpuinfo
    ///   - environment: the process environment
    public static func recommendedCoreType(current: String = current, cpuFlags: Set<String> = cpuFlags(),
                                           environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil else { return nil }
        let hasAVX512 = cpuFlags.isSuperset(of: ["avx512f", "avx512bw", "avx512dq", "avx512vl"])
        if genericFamilies.contains(current) {
            if hasAVX512 { return "SkylakeX" }
            if cpuFlags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
            return nil
        }
        // AVX-512 processors that 0.3.21 files under an AVX2 family (AMD Zen 4 is "Zen", i.e. the Haswell
        // kernels): its SkylakeX SGEMM runs the R6 GEMMs about 2× faster on such a machine (2 cores, 2026-12-02).
        if hasAVX512 && avx2Families.contains(current) { return "SkylakeX" }
        return nil
    }

    /// How long (2ⁿ cycles) an idle OpenBLAS worker thread spins before it sleeps. OpenBLAS's default, 2²⁸
    /// cycles (a tenth of a second), keeps its threads spinning between the small GEMMs of a training step,
    /// where they take the cores from Opal's own parallel loops; 2¹⁰ makes them sleep at once (R6 on 2
    /// cores: 72 → 66 ms per step).
    public static let recommendedThreadTimeout = "10"

    /// The OpenBLAS variables to set before the library loads: `OPENBLAS_CORETYPE` when
    /// `recommendedCoreType` names one, `OPENBLAS_THREAD_TIMEOUT` unless the user set it. Empty when
    /// nothing needs setting (so a process re-executed with them does not re-execute again).
    public static func recommendedEnvironment(current: String = current, cpuFlags: Set<String> = cpuFlags(),
                                              environment: [String: String] = ProcessInfo.processInfo.environment)
        -> [String: String] {
        var settings: [String: String] = [:]
        if let coreType = recommendedCoreType(current: current, cpuFlags: cpuFlags, environment: environment) {
            settings["OPENBLAS_CORETYPE"] = coreType
        }
        if environment["OPENBLAS_THREAD_TIMEOUT"] == nil { settings["OPENBLAS_THREAD_TIMEOUT"] = recommendedThreadTimeout }
        return settings
    }

    /// The feature flags of the first processor in /proc/cpuinfo (empty where there is none).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }
}
