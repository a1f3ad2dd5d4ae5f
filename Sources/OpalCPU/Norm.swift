import OpalCore

// Training-mode batch normalisation of the CPU backend (mirrors Kernels/norm.cl).
//   x, y, dy, dx: [batch, channels, spatial];  γ, β, mean, invstd, dγ, dβ: [channels]
// Per channel c the M = batch·spatial values are reduced in one pass with Double accumulators
// (8 lanes; forward: Σ(x − K) and Σ(x − K)² shifted by the channel's first value K, which keeps the
// variance exact-ish even when |mean| ≫ std; backward: Σdy and Σdy·(x − mean)), then one Float pass
// writes the result. Channels are split across threads.
// The simple references are the Double loops in Tests/OpalCPUTests/NormTests.swift.

extension CPUBackend {
    /// `y = (x − mean_c)·invstd_c·γ_c + β_c`, mean and biased variance over batch and spatial;
    /// writes `mean` and `inverseStandardDeviation` = 1/√(var + ε).
    public func batchNormForward(_ input: any DeviceBuffer, _ gamma: any DeviceBuffer, _ beta: any DeviceBuffer,
                                 _ output: any DeviceBuffer, mean: any DeviceBuffer,
                                 inverseStandardDeviation: any DeviceBuffer, descriptor d: BatchNormDescriptor) throws {
        try d.validate("batchNormForward")
        let x = try cpuBuffer(input, op: "batchNormForward", elements: d.count).floats
        let g = try cpuBuffer(gamma, op: "batchNormForward", elements: d.channels).floats
        let b = try cpuBuffer(beta, op: "batchNormForward", elements: d.channels).floats
        let y = try cpuBuffer(output, op: "batchNormForward", elements: d.count).floats
        let meanOut = try cpuBuffer(mean, op: "batchNormForward", elements: d.channels).floats
        let invstdOut = try cpuBuffer(inverseStandardDeviation, op: "batchNormForward", elements: d.channels).floats
        let (batch, channels, spatial) = (d.batch, d.channels, d.spatial)
        let count = Double(batch * spatial)
        let epsilon = Double(d.epsilon)
        parallelRanges(count: channels, minimumChunk: max(1, ParallelGrain.cheap / max(1, batch * spatial))) { start, end in
            for c in start..<end {
                let shift = x[c * spatial]
                var sum = 0.0, sumOfSquares = 0.0
                for n in 0..<batch {
                    let (s, q) = shiftedSums(x + (n * channels + c) * spatial, spatial, shift: shift)
                    sum += s; sumOfSquares += q
                }
                let shiftedMean = sum / count
                let variance = max(sumOfSquares / count - shiftedMean * shiftedMean, 0)
                let channelMean = Float(Double(shift) + shiftedMean)
                let invstd = Float(1 / (variance + epsilon).squareRoot())
                meanOut[c] = channelMean
                invstdOut[c] = invstd
                let scale = g[c] * invstd, offset = b[c]
                for n in 0..<batch {
                    let xr = x + (n * channels + c) * spatial, yr = y + (n * channels + c) * spatial
                    for s in 0..<spatial { yr[s] = (xr[s] - channelMean) * scale + offset }
                }
            }
        }
    }

    /// With `x̂ = (x − mean)·invstd` and M = batch·spatial: `dβ_c = Σ dy`, `dγ_c = Σ dy·x̂`,
    /// `dx = γ_c·invstd_c/M · (M·dy − dβ_c − x̂·dγ_c)`.
    public func batchNormBackward(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer, _ gamma: any DeviceBuffer,
                                  mean: any DeviceBuffer, inverseStandardDeviation: any DeviceBuffer,
                                  _ gradInput: any DeviceBuffer, _ gradGamma: any DeviceBuffer,
                                  _ gradBeta: any DeviceBuffer, descriptor d: BatchNormDescriptor) throws {
        try d.validate("batchNormBackward")
        let x = try cpuBuffer(input, op: "batchNormBackward", elements: d.count).floats
        let dy = try cpuBuffer(gradOutput, op: "batchNormBackward", elements: d.count).floats
        let g = try cpuBuffer(gamma, op: "batchNormBackward", elements: d.channels).floats
        let meanIn = try cpuBuffer(mean, op: "batchNormBackward", elements: d.channels).floats
        let invstdIn = try cpuBuffer(inverseStandardDeviation, op: "batchNormBackward", elements: d.channels).floats
        let dx = try cpuBuffer(gradInput, op: "batchNormBackward", elements: d.count).floats
        let dg = try cpuBuffer(gradGamma, op: "batchNormBackward", elements: d.channels).floats
        let db = try cpuBuffer(gradBeta, op: "batchNormBackward", elements: d.channels).floats
        let (batch, channels, spatial) = (d.batch, d.channels, d.spatial)
        let count = Double(batch * spatial)
        parallelRanges(count: channels, minimumChunk: max(1, ParallelGrain.cheap / max(1, batch * spatial))) { start, end in
            for c in start..<end {
                let channelMean = meanIn[c], invstd = invstdIn[c]
                var sumDy = 0.0, sumDyCentered = 0.0
                for n in 0..<batch {
                    let offset = (n * channels + c) * spatial
                    let (s, p) = gradientSums(x + offset, dy + offset, spatial, mean: channelMean)
                    sumDy += s; sumDyCentered += p
                }
                let gradientBeta = sumDy
                let gradientGamma = sumDyCentered * Double(invstd)
                db[c] = Float(gradientBeta)
                dg[c] = Float(gradientGamma)
                // dx = k·dy − k·dβ/M − k·dγ·invstd/M·(x − mean), k = γ·invstd.
                let k = Double(g[c]) * Double(invstd)
                let scale = Float(k)
                let constant = Float(k * gradientBeta / count)
                let slope = Float(k * gradientGamma * Double(invstd) / count)
                for n in 0..<batch {
                    let offset = (n * channels + c) * spatial
                    let xr = x + offset, dyr = dy + offset, dxr = dx + offset
                    for s in 0..<spatial { dxr[s] = scale * dyr[s] - constant - slope * (xr[s] - channelMean) }
                }
            }
        }
    }
}

extension BatchNormDescriptor {
    /// Throws `TensorError.invalidArgument` naming `op` unless every extent is positive and ε ≥ 0.
    func validate(_ op: String) throws {
        guard batch > 0, channels > 0, spatial > 0 else {
            throw TensorError.invalidArgument(
                op: op, reason: "batch (\(batch)), channels (\(channels)) and spatial (\(spatial)) must be positive")
        }
        guard epsilon >= 0, epsilon.isFinite else {
            throw TensorError.invalidArgument(op: op, reason: "epsilon \(epsilon) must be finite and ≥ 0")
        }
    }
}

/// (Σ (x[j] − shift), Σ (x[j] − shift)²) for j < n, in Double with 8 lanes.
@inline(__always)
func shiftedSums(_ x: UnsafePointer<Float>, _ n: Int, shift: Float) -> (Double, Double) {
    var sum = SIMD8<Double>(), squares = SIMD8<Double>()
    let raw = UnsafeRawPointer(x)
    let shiftVector = SIMD8<Float>(repeating: shift)
    var j = 0
    while j + 8 <= n {
        let v = SIMD8<Double>(raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self) - shiftVector)
        sum += v
        squares += v * v
        j += 8
    }
    var total = sum.sum(), totalSquares = squares.sum()
    while j < n {
        let v = Double(x[j] - shift)
        total += v; totalSquares += v * v
        j += 1
    }
    return (total, totalSquares)
}

/// (Σ dy[j], Σ dy[j]·(x[j] − mean)) for j < n, in Double with 8 lanes.
@inline(__always)
func gradientSums(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ n: Int, mean: Float) -> (Double, Double) {
    var sum = SIMD8<Double>(), products = SIMD8<Double>()
    let rawX = UnsafeRawPointer(x), rawDy = UnsafeRawPointer(dy)
    let meanVector = SIMD8<Double>(repeating: Double(mean))
    var j = 0
    while j + 8 <= n {
        let g = SIMD8<Double>(rawDy.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self))
        let v = SIMD8<Double>(rawX.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self))
        sum += g
        products += g * (v - meanVector)
        j += 8
    }
    var total = sum.sum(), totalProducts = products.sum()
    while j < n {
        let g = Double(dy[j])
        total += g; totalProducts += g * (Double(x[j]) - Double(mean))
        j += 1
    }
    return (total, totalProducts)
}
