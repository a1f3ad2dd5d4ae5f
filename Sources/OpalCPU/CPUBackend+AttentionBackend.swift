import OpalCore

// The Transformer op set: fused attention lives in Attention.swift, layer normalisation in Norm.swift.
extension CPUBackend: AttentionBackend {}
