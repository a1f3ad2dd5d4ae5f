import OpalCore

// Reductions of the CPU backend (mirrors Kernels/reduce.cl). The input is viewed as
// x: [outer, size, inner] and reduced over the middle axis into y: [outer, inner].
//   inner == 1: each output is a contiguous row → SIMD accumulators along the row.
//   inner  > 1: the rows of `inner` elements are accumulated into y in order s = 0, 1, …, so the
//               inner loop is contiguous (the bias-gradient case [1, batch, features]).
// The simple references are the Double loops in Tests/OpalCPUTests/ReduceTests.swift.

extension CPUBackend {
    public func reduce(_ op: ReduceOp, _ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws {
        let (outer, size, inner) = (layout.outer, layout.size, layout.inner)
        guard outer >= 0, size >= 0, inner >= 0 else {
            throw TensorError.invalidArgument(op: "reduce", reason: "negative extent in \(layout)")
        }
        let x = try cpuBuffer(x, op: "reduce", elements: outer * size * inner).floats
        let y = try cpuBuffer(y, op: "reduce", elements: outer * inner).floats
        guard outer * inner > 0 else { return }
        guard size > 0 else {
            y.update(repeating: op == .sum ? 0 : -.infinity, count: outer * inner)
            return
        }
        if inner == 1 {
            parallelRanges(count: outer, minimumChunk: max(1, ParallelGrain.cheap / size)) { start, end in
                for row in start..<end {
                    y[row] = op == .sum ? sumRow(x + row * size, size) : maxRow(x + row * size, size)
                }
            }
            return
        }
        for o in 0..<outer {
            let source = x + o * size * inner
            let target = y + o * inner
            target.update(from: source, count: inner)
            for s in 1..<size {
                let row = source + s * inner
                switch op {
                case .sum: for i in 0..<inner { target[i] += row[i] }
                case .max: for i in 0..<inner { target[i] = Maximum.apply(row[i], target[i]) }
                }
            }
        }
    }

    /// `y[o, i] = argmax_s x[o, s, i]` as Int32, the first index of the maximum (a NaN counts as
    /// the maximum, so it is reported rather than hidden).
    public func argmax(_ x: any DeviceBuffer, _ y: any DeviceBuffer, layout: ReduceLayout) throws {
        let (outer, size, inner) = (layout.outer, layout.size, layout.inner)
        guard outer >= 0, size >= 0, inner >= 0 else {
            throw TensorError.invalidArgument(op: "argmax", reason: "negative extent in \(layout)")
        }
        let x = try cpuBuffer(x, op: "argmax", elements: outer * size * inner).floats
        let y = try cpuBuffer(y, op: "argmax", elements: outer * inner).ints
        guard outer * inner > 0 else { return }
        guard size > 0 else {
            y.update(repeating: 0, count: outer * inner)
            return
        }
        for o in 0..<outer {
            for i in 0..<inner {
                let column = x + o * size * inner + i
                var best = column[0], bestIndex = 0
                if !best.isNaN {
                    for s in 1..<size {
                        let value = column[s * inner]
                        if value > best || value.isNaN {
                            best = value; bestIndex = s
                            if value.isNaN { break }
                        }
                    }
                }
                y[o * inner + i] = Int32(bestIndex)
            }
        }
    }
}

/// Σ x[j] for j < n with 16 lanes of partial sums (the compiler does not reorder a scalar float sum).
@inline(__always)
func sumRow(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var lanes = SIMD16<Float>()
    var j = 0
    let raw = UnsafeRawPointer(x)
    while j + 16 <= n {
        lanes += raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD16<Float>.self)
        j += 16
    }
    var total = lanes.sum()
    while j < n { total += x[j]; j += 1 }
    return total
}

/// max_j x[j] for j < n (n ≥ 1); NaN if any element is NaN.
@inline(__always)
func maxRow(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var best = x[0]
    for j in 1..<max(n, 1) { best = Maximum.apply(x[j], best) }
    return best
}

/// Σ x[j]·y[j] for j < n with 16 lanes of partial sums.
@inline(__always)
func dotRow(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
    var lanes = SIMD16<Float>()
    var j = 0
    let rawX = UnsafeRawPointer(x), rawY = UnsafeRawPointer(y)
    while j + 16 <= n {
        lanes += rawX.loadUnaligned(fromByteOffset: j * 4, as: SIMD16<Float>.self)
            * rawY.loadUnaligned(fromByteOffset: j * 4, as: SIMD16<Float>.self)
        j += 16
    }
    var total = lanes.sum()
    while j < n { total += x[j] * y[j]; j += 1 }
    return total
}
