import OpalCore

// The peak probes of Kernels/peak.cl: the device's attainable fp32 multiply-add rate and copy bandwidth.

extension OpenCLBackend {
    /// Runs `peak_fma`: `count` work-items, `iterations` rounds of 8 float16 multiply-add chains each
    /// (`count · iterations · 256` FLOPs); `output[g]` receives work-item g's checksum.
    public func peakMultiplyAdd(_ output: any DeviceBuffer, count: Int, iterations: Int, a: Float, b: Float) throws {
        guard count > 0, iterations >= 0 else {
            throw TensorError.invalidArgument(op: "peakMultiplyAdd", reason: "count \(count) must be positive and iterations \(iterations) ≥ 0")
        }
        let y = try own(output, "peakMultiplyAdd", elements: count)
        // CPU devices run each work-group as a loop over its work-items: one work-item per group keeps the
        // explicit vector chains in registers. GPUs take the usual 1-D launch.
        let local = device.type == .cpu ? 1 : parameters.workGroupSize
        try enqueue(.peakFMA, [.buffer(y.buffer), .int(count), .int(iterations), .float(a), .float(b)],
                    global: { local in [roundUp(count, to: local)] },
                    local: { limit in [largestPowerOfTwo(atMost: min(local, limit))] })
    }

    /// Runs `peak_copy`: copies the first `count4 · 4` floats of `input` to `output` as float4s.
    public func peakCopy(_ input: any DeviceBuffer, _ output: any DeviceBuffer, count4: Int) throws {
        guard count4 > 0 else { throw TensorError.invalidArgument(op: "peakCopy", reason: "count \(count4) must be positive") }
        let x = try own(input, "peakCopy", elements: 4 * count4)
        let y = try own(output, "peakCopy", elements: 4 * count4)
        try launch(.peakCopy, [.buffer(x.buffer), .buffer(y.buffer), .int(count4)], count: count4)
    }
}
