import OpalCore

// The image op set lives in Conv.swift, Pool.swift, Norm.swift and GemmEpilogue.swift.
extension CPUBackend: ImageBackend {}
