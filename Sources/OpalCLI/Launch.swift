import Foundation
import OpalCPU

extension OpalCommand {
    /// The entry point: makes sure OpenBLAS runs the kernels this CPU supports, then parses the command line.
    static func main() {
        reexecuteWithBetterOpenBLASKernelsIfNeeded()
        main(nil)
    }

    /// OpenBLAS chooses its kernels when it loads, before any Swift code runs; where its detection fell
    /// back to a generic family on a CPU with AVX-512 or AVX2, run this program again with
    /// `OPENBLAS_CORETYPE` set (once: the variable being set stops a second re-execution).
    private static func reexecuteWithBetterOpenBLASKernelsIfNeeded() {
        guard let coreType = OpenBLASKernels.recommendedCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when exec failed: carry on with the slower kernels (the device description says so).
    }
}
