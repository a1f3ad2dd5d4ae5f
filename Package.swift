// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Opal",
    products: [
        .library(name: "Opal", targets: ["Opal"]),
        .executable(name: "opal", targets: ["OpalCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C at the edges: one shim per system library, each named with its Debian package.
        .systemLibrary(name: "COpenCL", path: "Sources/COpenCL",
                       providers: [.apt(["ocl-icd-opencl-dev", "opencl-headers"])]),
        .systemLibrary(name: "CCLBlast", path: "Sources/CCLBlast",
                       providers: [.apt(["libclblast-dev"])]),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib",
                       providers: [.apt(["zlib1g-dev"])]),

        // Build tool: embeds Kernels/*.cl (and the shipped digits data) into the binary.
        .executableTarget(name: "KernelEmbedder", path: "Sources/KernelEmbedder"),
        .plugin(name: "EmbedKernels", capability: .buildTool(),
                dependencies: ["KernelEmbedder"], path: "Plugins/EmbedKernels"),

        .target(name: "OpenCLKit", dependencies: ["COpenCL"]),
        .target(name: "OpalCore"),
        // The CPU backend's transcendental loops, compiled for AVX2 + FMA and for the baseline (chosen at run time).
        .target(name: "CVectorMath"),
        .target(name: "CParallel"),
        .target(name: "OpalCPU", dependencies: ["OpalCore", "CBLAS", "CVectorMath", "CParallel"]),
        .target(name: "OpalOpenCL", dependencies: ["OpalCore", "OpenCLKit", "CCLBlast", "COpenCL"],
                plugins: ["EmbedKernels"]),
        .target(name: "Opal", dependencies: ["OpalCore", "OpalCPU", "OpalOpenCL", "OpenCLKit", "CZlib"],
                exclude: ["Resources"], plugins: ["EmbedKernels"]),
        .target(name: "OpalBenchmarks", dependencies: ["Opal", "OpalCPU", "OpalOpenCL", "OpenCLKit"],
                path: "Benchmarks/OpalBenchmarks"),
        .executableTarget(name: "OpalCLI", dependencies: [
            "Opal", "OpalBenchmarks", "OpalCPU",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "OpenCLKitTests", dependencies: ["OpenCLKit"]),
        .testTarget(name: "OpalCoreTests", dependencies: ["OpalCore", "OpalCPU"]),
        .testTarget(name: "OpalCPUTests", dependencies: ["OpalCore", "OpalCPU", "CVectorMath"]),
        .testTarget(name: "OpalOpenCLTests", dependencies: ["OpalCore", "OpalCPU", "OpalOpenCL", "OpenCLKit"]),
        .testTarget(name: "OpalTests", dependencies: ["Opal", "OpalOpenCL"], exclude: ["Corpus"]),
        .testTarget(name: "OpalCLITests", dependencies: ["OpalCLI"]),
    ],
    swiftLanguageModes: [.v6]
)
