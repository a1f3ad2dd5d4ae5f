import CVectorMath
import OpalCore

// Training-mode batch normalisation of the CPU backend (mirrors Kernels/norm.cl).
//   x, y, dy, dx: [batch, channels, spatial];  γ, β, mean, invstd, dγ, dβ: [channels]
// Per channel c the M = batch·spatial values are reduced in one pass with Double accumulators
// (8 lanes; forward: Σ(x − K) and Σ(x − K)² shifted by the channel's first value K, which keeps the
// variance exact-ish even when |mean| ≫ std; backward: Σdy and Σdy·(x − mean)), then one Float pass
// writes the result. Channels are split across threads.
// The simple references are the Double loops in Tests/OpalCPUTests/NormTests.swift.
//
// Layer normalisation over the last axis (mirrors the layer_norm_* kernels of Kernels/norm.cl):
//   x, y, dy, dx: [rows, columns];  γ, β, dγ, dβ: [columns];  mean, rstd: [rows]
// Forward: each row's Σ(x − K), Σ(x − K)² (K = the row's first value) in one Double pass, then one Float
// pass for y. Backward: each row's Σĝ, Σĝ·x̂ (ĝ = dy·γ) in Double, then dx; dγ, dβ are summed over the
// rows in row order (Double accumulators per column, columns split across threads): deterministic.
// The simple references are the Double loops in Tests/OpalCPUTests/LayerNormTests.swift.

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
        if spatial == 1 {
            // Features ([batch, channels]): sums down the columns, vectorised across a band of channels.
            parallelRanges(count: channels, minimumChunk: max(16, ParallelGrain.normalisation / batch)) { start, end in
                let width = end - start
                let sums = UnsafeMutablePointer<Double>.allocate(capacity: 2 * width)
                let scales = UnsafeMutablePointer<Float>.allocate(capacity: width)
                defer { sums.deallocate(); scales.deallocate() }
                sums.update(repeating: 0, count: 2 * width)
                // Shifted by row 0 (as the spatial path shifts by each channel's first element).
                opal_column_shifted_sums(x + start, batch, width, channels, x + start, sums, sums + width)
                for j in 0..<width {
                    let c = start + j
                    let (channelMean, invstd) = normalisationStatistics(shift: x[c], sum: sums[j],
                                                                        squares: sums[width + j], count: count,
                                                                        epsilon: epsilon)
                    meanOut[c] = channelMean
                    invstdOut[c] = invstd
                    scales[j] = g[c] * invstd
                }
                let (means, offsets) = (meanOut + start, b + start)
                for n in 0..<batch {
                    let xr = x + n * channels + start, yr = y + n * channels + start
                    for j in 0..<width { yr[j] = (xr[j] - means[j]) * scales[j] + offsets[j] }
                }
            }
            return
        }
        parallelRanges(count: channels, minimumChunk: max(1, ParallelGrain.normalisation / max(1, batch * spatial))) { start, end in
            for c in start..<end {
                let shift = x[c * spatial]
                var sum = 0.0, sumOfSquares = 0.0
                for n in 0..<batch {
                    let (s, q) = shiftedSums(x + (n * channels + c) * spatial, spatial, shift: shift)
                    sum += s; sumOfSquares += q
                }
                let (channelMean, invstd) = normalisationStatistics(shift: shift, sum: sum, squares: sumOfSquares,
                                                                    count: count, epsilon: epsilon)
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
        if spatial == 1 {
            // Features: as in the forward pass, column sums across a band of channels.
            parallelRanges(count: channels, minimumChunk: max(16, ParallelGrain.normalisation / batch)) { start, end in
                let width = end - start
                let sums = UnsafeMutablePointer<Double>.allocate(capacity: 2 * width)
                let coefficients = UnsafeMutablePointer<Float>.allocate(capacity: 3 * width)
                defer { sums.deallocate(); coefficients.deallocate() }
                sums.update(repeating: 0, count: 2 * width)
                opal_column_gradient_sums(x + start, dy + start, batch, width, channels, meanIn + start, sums,
                                          sums + width)
                let (scales, constants, slopes) = (coefficients, coefficients + width, coefficients + 2 * width)
                for j in 0..<width {
                    let c = start + j
                    let gradient = BatchNormGradient(sumDy: sums[j], sumDyCentered: sums[width + j], gamma: g[c],
                                                     invstd: invstdIn[c], count: count)
                    (db[c], dg[c]) = (gradient.beta, gradient.gamma)
                    (scales[j], constants[j], slopes[j]) = (gradient.scale, gradient.constant, gradient.slope)
                }
                let means = meanIn + start
                for n in 0..<batch {
                    let offset = n * channels + start
                    let xr = x + offset, dyr = dy + offset, dxr = dx + offset
                    for j in 0..<width {
                        dxr[j] = scales[j] * dyr[j] - constants[j] - slopes[j] * (xr[j] - means[j])
                    }
                }
            }
            return
        }
        parallelRanges(count: channels, minimumChunk: max(1, ParallelGrain.normalisation / max(1, batch * spatial))) { start, end in
            for c in start..<end {
                let channelMean = meanIn[c], invstd = invstdIn[c]
                var sumDy = 0.0, sumDyCentered = 0.0
                for n in 0..<batch {
                    let offset = (n * channels + c) * spatial
                    let (s, p) = gradientSums(x + offset, dy + offset, spatial, mean: channelMean)
                    sumDy += s; sumDyCentered += p
                }
                let gradient = BatchNormGradient(sumDy: sumDy, sumDyCentered: sumDyCentered, gamma: g[c],
                                                 invstd: invstd, count: count)
                (db[c], dg[c]) = (gradient.beta, gradient.gamma)
                let (scale, constant, slope) = (gradient.scale, gradient.constant, gradient.slope)
                for n in 0..<batch {
                    let offset = (n * channels + c) * spatial
                    let xr = x + offset, dyr = dy + offset, dxr = dx + offset
                    for s in 0..<spatial { dxr[s] = scale * dyr[s] - constant - slope * (xr[s] - channelMean) }
                }
            }
        }
    }
}

extension CPUBackend {
    /// `y = (x − μ)·rstd·γ + β` per row, μ the row mean, rstd = 1/√(σ² + ε), σ² the biased variance.
    public func layerNormForward(_ x: any DeviceBuffer, gamma: any DeviceBuffer, beta: any DeviceBuffer,
                                 output: any DeviceBuffer, mean: any DeviceBuffer,
                                 reciprocalStandardDeviation: any DeviceBuffer, descriptor d: LayerNormDescriptor) throws {
        let op = "layerNormForward"
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        let x = try cpuBuffer(x, op: op, elements: d.count).floats
        let g = try cpuBuffer(gamma, op: op, elements: d.columns).floats
        let b = try cpuBuffer(beta, op: op, elements: d.columns).floats
        let y = try cpuBuffer(output, op: op, elements: d.count).floats
        let meanOut = try cpuBuffer(mean, op: op, elements: d.rows).floats
        let rstdOut = try cpuBuffer(reciprocalStandardDeviation, op: op, elements: d.rows).floats
        let columns = d.columns
        let count = Double(columns), epsilon = Double(d.epsilon)
        parallelRanges(count: d.rows, minimumChunk: max(1, ParallelGrain.cheap / columns)) { start, end in
            for row in start..<end {
                let xr = x + row * columns
                let shift = xr[0]
                let (sum, sumOfSquares) = shiftedSums(xr, columns, shift: shift)
                let (rowMean, rstd) = normalisationStatistics(shift: shift, sum: sum, squares: sumOfSquares,
                                                               count: count, epsilon: epsilon)
                meanOut[row] = rowMean
                rstdOut[row] = rstd
                layerNormRow(xr, g, b, y + row * columns, columns, mean: rowMean, rstd: rstd)
            }
        }
    }

    /// `dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))`, `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy` (x̂ = (x − μ)·rstd, ĝ = dy·γ).
    public func layerNormBackward(gradOutput: any DeviceBuffer, _ x: any DeviceBuffer, gamma: any DeviceBuffer,
                                  mean: any DeviceBuffer, reciprocalStandardDeviation: any DeviceBuffer,
                                  gradInput: any DeviceBuffer, gradGamma: any DeviceBuffer, gradBeta: any DeviceBuffer,
                                  descriptor d: LayerNormDescriptor) throws {
        let op = "layerNormBackward"
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: problem) }
        let dy = try cpuBuffer(gradOutput, op: op, elements: d.count).floats
        let x = try cpuBuffer(x, op: op, elements: d.count).floats
        let g = try cpuBuffer(gamma, op: op, elements: d.columns).floats
        let meanIn = try cpuBuffer(mean, op: op, elements: d.rows).floats
        let rstdIn = try cpuBuffer(reciprocalStandardDeviation, op: op, elements: d.rows).floats
        let dx = try cpuBuffer(gradInput, op: op, elements: d.count).floats
        let dg = try cpuBuffer(gradGamma, op: op, elements: d.columns).floats
        let db = try cpuBuffer(gradBeta, op: op, elements: d.columns).floats
        let (rows, columns) = (d.rows, d.columns)
        parallelRanges(count: rows, minimumChunk: max(1, ParallelGrain.cheap / columns)) { start, end in
            for row in start..<end {
                let offset = row * columns
                layerNormGradientRow(x + offset, dy + offset, g, dx + offset, columns,
                                     mean: meanIn[row], rstd: rstdIn[row])
            }
        }
        // dγ, dβ: each column's sum runs over the rows in order, whatever the split.
        parallelRanges(count: columns, minimumChunk: max(1, ParallelGrain.cheap / rows)) { start, end in
            let width = end - start
            let sums = UnsafeMutablePointer<Double>.allocate(capacity: 2 * width)
            defer { sums.deallocate() }
            sums.update(repeating: 0, count: 2 * width)
            for row in 0..<rows {
                let offset = row * columns + start
                layerNormParameterSums(x + offset, dy + offset, sums, sums + width, width,
                                       mean: meanIn[row], rstd: rstdIn[row])
            }
            for c in 0..<width {
                dg[start + c] = Float(sums[c])
                db[start + c] = Float(sums[width + c])
            }
        }
    }
}

/// y[c] = (x[c] − mean)·rstd·γ[c] + β[c] for c < n.
@inline(__always)
private func layerNormRow(_ x: UnsafePointer<Float>, _ gamma: UnsafePointer<Float>, _ beta: UnsafePointer<Float>,
                          _ y: UnsafeMutablePointer<Float>, _ n: Int, mean: Float, rstd: Float) {
    for c in 0..<n { y[c] = (x[c] - mean) * rstd * gamma[c] + beta[c] }
}

/// One row of dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), the two means in Double.
@inline(__always)
private func layerNormGradientRow(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ gamma: UnsafePointer<Float>,
                                  _ dx: UnsafeMutablePointer<Float>, _ n: Int, mean: Float, rstd: Float) {
    var sum = SIMD8<Double>(), products = SIMD8<Double>()
    let rawX = UnsafeRawPointer(x), rawDy = UnsafeRawPointer(dy), rawGamma = UnsafeRawPointer(gamma)
    let means = SIMD8<Float>(repeating: mean), rstds = SIMD8<Float>(repeating: rstd)
    var j = 0
    while j + 8 <= n {
        let gHat = rawDy.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
            * rawGamma.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
        let xHat = (rawX.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self) - means) * rstds
        sum += SIMD8<Double>(gHat)
        products += SIMD8<Double>(gHat) * SIMD8<Double>(xHat)
        j += 8
    }
    var total = sum.sum(), totalProducts = products.sum()
    while j < n {
        let gHat = Double(dy[j] * gamma[j]), xHat = Double((x[j] - mean) * rstd)
        total += gHat; totalProducts += gHat * xHat
        j += 1
    }
    let meanG = Float(total / Double(n)), meanGX = Float(totalProducts / Double(n))
    for c in 0..<n {
        let xHat = (x[c] - mean) * rstd
        dx[c] = rstd * (dy[c] * gamma[c] - meanG - xHat * meanGX)
    }
}

/// gradGamma[c] += dy[c]·(x[c] − mean)·rstd, gradBeta[c] += dy[c] for c < n (one row's share).
@inline(__always)
private func layerNormParameterSums(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                    _ gradGamma: UnsafeMutablePointer<Double>, _ gradBeta: UnsafeMutablePointer<Double>,
                                    _ n: Int, mean: Float, rstd: Float) {
    for c in 0..<n {
        let g = Double(dy[c])
        gradGamma[c] += g * Double((x[c] - mean) * rstd)
        gradBeta[c] += g
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

/// Mean and 1/√(var + ε) of a channel (batch norm) or row (layer norm) from its sums shifted by `shift`
/// (`shiftedSums`) over `count` values:
/// mean = shift + Σ/M, var = Σ²/M − (Σ/M)² (clamped at 0; the shift keeps the difference exact near a large mean).
@inline(__always)
func normalisationStatistics(shift: Float, sum: Double, squares: Double, count: Double,
                         epsilon: Double) -> (mean: Float, invstd: Float) {
    let shiftedMean = sum / count
    let variance = max(squares / count - shiftedMean * shiftedMean, 0)
    return (Float(Double(shift) + shiftedMean), Float(1 / (variance + epsilon).squareRoot()))
}

/// A channel's dβ = Σ dy and dγ = invstd·Σ dy·(x − mean), and the coefficients of
/// dx = scale·dy − constant − slope·(x − mean) (k = γ·invstd: scale k, constant k·dβ/M, slope k·dγ·invstd/M).
struct BatchNormGradient {
    let beta: Float, gamma: Float
    let scale: Float, constant: Float, slope: Float

    @inline(__always)
    init(sumDy: Double, sumDyCentered: Double, gamma weight: Float, invstd: Float, count: Double) {
        let gradientGamma = sumDyCentered * Double(invstd)
        let k = Double(weight) * Double(invstd)
        (beta, gamma) = (Float(sumDy), Float(gradientGamma))
        (scale, constant, slope) = (Float(k), Float(k * sumDy / count), Float(k * gradientGamma * Double(invstd) / count))
    }
}

/// (Σ (x[j] − shift), Σ (x[j] − shift)²) for j < n, in Double with 8 lanes (CVectorMath: AVX2 where the
/// processor has it; Swift's own SIMD8<Double> runs as SSE2 pairs).
@inline(__always)
func shiftedSums(_ x: UnsafePointer<Float>, _ n: Int, shift: Float) -> (Double, Double) {
    var sum = 0.0, squares = 0.0
    opal_shifted_sums(x, n, shift, &sum, &squares)
    return (sum, squares)
}

/// (Σ dy[j], Σ dy[j]·(x[j] − mean)) for j < n, in Double with 8 lanes (CVectorMath).
@inline(__always)
func gradientSums(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ n: Int, mean: Float) -> (Double, Double) {
    var sum = 0.0, products = 0.0
    opal_gradient_sums(x, dy, n, mean, &sum, &products)
    return (sum, products)
}
