import OpalCore

// The image op set lives in OpenCLBackend+Conv.swift, +Pool.swift, +Norm.swift and +Gemm.swift.
extension OpenCLBackend: ImageBackend {}
