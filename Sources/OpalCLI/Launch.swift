import Foundation
import OpalCPU

extension OpalCommand {
    /// The entry point: makes sure OpenBLAS runs the kernels this CPU supports, then parses the command line.
    static func main() {
        reexecuteWithBetterOpenBLASKernelsIfNeeded()
        main(nil)
    }

    /// OpenBLAS reads its settings when it loads, before any Swift code runs: where its kernel detection
    /// fell back to a generic family on a CPU with AVX-512 or AVX2, or its threads would spin long after
    /// each GEMM, run this program again with `OPENBLAS_CORETYPE` / `OPENBLAS_THREAD_TIMEOUT` set (once:
    /// the variables being set stop a second re-execution).
    private static func reexecuteWithBetterOpenBLASKernelsIfNeeded() {
        let settings = OpenBLASKernels.recommendedEnvironment()
        guard !settings.isEmpty else { return }
        for (name, value) in settings { setenv(name, value, 1) }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when exec failed: carry on with the slower kernels (the device description says so).
    }
}
