import XCTest
@testable import OpalCPU

/// The OpenBLAS settings the `opal` CLI re-executes itself with.
final class OpenBLASKernelsTests: XCTestCase {
    private let avx512: Set<String> = ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]

    func testCoreTypeIsForcedWhenDetectionFellBackOrMissedAVX512() {
        XCTAssertEqual(OpenBLASKernels.recommendedCoreType(current: "Prescott", cpuFlags: avx512, environment: [:]), "SkylakeX")
        XCTAssertEqual(OpenBLASKernels.recommendedCoreType(current: "Prescott", cpuFlags: ["avx2", "fma"], environment: [:]), "Haswell")
        XCTAssertNil(OpenBLASKernels.recommendedCoreType(current: "Prescott", cpuFlags: ["sse3"], environment: [:]))
        XCTAssertNil(OpenBLASKernels.recommendedCoreType(current: "Zen", cpuFlags: ["avx2", "fma"], environment: [:]))
        XCTAssertNil(OpenBLASKernels.recommendedCoreType(current: "SkylakeX", cpuFlags: avx512, environment: [:]))
        XCTAssertNil(OpenBLASKernels.recommendedCoreType(current: "Haswell", cpuFlags: ["avx2", "fma"], environment: [:]))
        // AVX-512 under an AVX2 family (AMD Zen 4 in 0.3.21): the AVX-512 kernels.
        XCTAssertEqual(OpenBLASKernels.recommendedCoreType(current: "Zen", cpuFlags: avx512, environment: [:]), "SkylakeX")
        XCTAssertEqual(OpenBLASKernels.recommendedCoreType(current: "Haswell", cpuFlags: avx512, environment: [:]), "SkylakeX")
        XCTAssertNil(OpenBLASKernels.recommendedCoreType(current: "Prescott", cpuFlags: avx512,
                                                         environment: ["OPENBLAS_CORETYPE": "Haswell"]))
    }

    func testEnvironmentAddsTheThreadTimeoutUnlessSetAndIsEmptyOnceApplied() {
        let first = OpenBLASKernels.recommendedEnvironment(current: "Prescott", cpuFlags: avx512, environment: [:])
        XCTAssertEqual(first, ["OPENBLAS_CORETYPE": "SkylakeX", "OPENBLAS_THREAD_TIMEOUT": "10"])
        XCTAssertEqual(OpenBLASKernels.recommendedEnvironment(current: "Zen", cpuFlags: ["avx2", "fma"], environment: [:]),
                       ["OPENBLAS_THREAD_TIMEOUT": "10"])
        XCTAssertEqual(OpenBLASKernels.recommendedEnvironment(current: "Zen", cpuFlags: ["avx2", "fma"],
                                                              environment: ["OPENBLAS_THREAD_TIMEOUT": "28"]), [:])
        // After the re-execution the variables are set: nothing is left to apply, so there is no loop.
        XCTAssertEqual(OpenBLASKernels.recommendedEnvironment(current: "SkylakeX", cpuFlags: avx512, environment: first), [:])
    }
}
