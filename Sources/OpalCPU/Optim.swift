import OpalCore

// Fused optimiser updates of the CPU backend (mirrors Kernels/optim.cl), all arrays [count].
//   Adam   g = grad + (decoupled ? 0 : wd·θ)
//          m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
//          θ ← θ − lr·((m / bc1) / (√(v / bc2) + ε) + (decoupled ? wd·θ : 0))
//   SGD    g = grad + wd·θ;  v ← μ·v + g;  θ ← θ − lr·(nesterov ? g + μ·v : v)   (μ = 0: θ ← θ − lr·g)
// One pass over memory per step, split across the cores for large parameters.
// The simple references are the Double loops in Tests/OpalCPUTests/OptimTests.swift.

extension CPUBackend {
    public func adamUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, m: any DeviceBuffer,
                           v: any DeviceBuffer, count: Int, step: AdamStep) throws {
        let theta = try cpuBuffer(parameter, op: "adamUpdate", elements: count).floats
        let grad = try cpuBuffer(gradient, op: "adamUpdate", elements: count).floats
        let m = try cpuBuffer(m, op: "adamUpdate", elements: count).floats
        let v = try cpuBuffer(v, op: "adamUpdate", elements: count).floats
        parallelRanges(count: count, minimumChunk: ParallelGrain.expensive) { start, end in
            adamKernel(theta + start, grad + start, m + start, v + start, end - start, step)
        }
    }

    public func sgdUpdate(parameter: any DeviceBuffer, gradient: any DeviceBuffer, velocity: any DeviceBuffer,
                          count: Int, step: SGDStep) throws {
        let theta = try cpuBuffer(parameter, op: "sgdUpdate", elements: count).floats
        let grad = try cpuBuffer(gradient, op: "sgdUpdate", elements: count).floats
        let (learningRate, momentum, weightDecay) = (step.learningRate, step.momentum, step.weightDecay)
        if momentum == 0 {
            parallelRanges(count: count, minimumChunk: ParallelGrain.cheap) { start, end in
                sgdKernel(theta + start, grad + start, end - start, learningRate: learningRate, weightDecay: weightDecay)
            }
            return
        }
        let velocity = try cpuBuffer(velocity, op: "sgdUpdate", elements: count).floats
        let nesterov = step.nesterov
        parallelRanges(count: count, minimumChunk: ParallelGrain.cheap) { start, end in
            sgdMomentumKernel(theta + start, grad + start, velocity + start, end - start, learningRate: learningRate,
                              momentum: momentum, weightDecay: weightDecay, nesterov: nesterov)
        }
    }
}

// The loops take every value as a parameter: a closure reading its captures inside the loop would
// have to reload them after each store (they might alias), which stops the vectoriser.

private func adamKernel(_ theta: UnsafeMutablePointer<Float>, _ grad: UnsafeMutablePointer<Float>,
                        _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>, _ count: Int,
                        _ step: AdamStep) {
    let (beta1, beta2) = (step.beta1, step.beta2)
    let (oneMinusBeta1, oneMinusBeta2) = (1 - step.beta1, 1 - step.beta2)
    let (biasCorrection1, biasCorrection2) = (step.biasCorrection1, step.biasCorrection2)
    let (learningRate, epsilon) = (step.learningRate, step.epsilon)
    let l2 = step.decoupled ? 0 : step.weightDecay
    let decay = step.decoupled ? step.weightDecay : 0
    for i in 0..<count {
        let parameter = theta[i]
        let g = grad[i] + l2 * parameter
        let first = beta1 * m[i] + oneMinusBeta1 * g
        let second = beta2 * v[i] + oneMinusBeta2 * g * g
        m[i] = first
        v[i] = second
        let update = (first / biasCorrection1) / (nonNegativeSquareRoot(second / biasCorrection2) + epsilon)
        theta[i] = parameter - learningRate * (update + decay * parameter)
    }
}

private func sgdKernel(_ theta: UnsafeMutablePointer<Float>, _ grad: UnsafeMutablePointer<Float>, _ count: Int,
                       learningRate: Float, weightDecay: Float) {
    for i in 0..<count { theta[i] -= learningRate * (grad[i] + weightDecay * theta[i]) }
}

private func sgdMomentumKernel(_ theta: UnsafeMutablePointer<Float>, _ grad: UnsafeMutablePointer<Float>,
                               _ velocity: UnsafeMutablePointer<Float>, _ count: Int, learningRate: Float,
                               momentum: Float, weightDecay: Float, nesterov: Bool) {
    if nesterov {
        for i in 0..<count {
            let g = grad[i] + weightDecay * theta[i]
            let v = momentum * velocity[i] + g
            velocity[i] = v
            theta[i] -= learningRate * (g + momentum * v)
        }
    } else {
        for i in 0..<count {
            let g = grad[i] + weightDecay * theta[i]
            let v = momentum * velocity[i] + g
            velocity[i] = v
            theta[i] -= learningRate * v
        }
    }
}

/// √x for finite x ≥ 0, within 2·10⁻⁷ relative error (about 1.5 ulp) for normal x; 0 for 0.
///
/// Why not `Float.squareRoot()`: on Linux it lowers to `sqrtf` with an errno branch for negative
/// input, which keeps the loop scalar (~5× slower for Adam). This is the classic inverse square-root
/// estimate refined by three Newton steps r ← r·(1.5 − ½x·r²), all vectorisable; then √x = x·r.
/// Tested against Double `sqrt` in OptimTests.testNonNegativeSquareRoot.
@inline(__always)
func nonNegativeSquareRoot(_ x: Float) -> Float {
    var r = Float(bitPattern: 0x5F37_5A86 &- (x.bitPattern >> 1))
    let half = 0.5 * x
    r = r * (1.5 - half * r * r)
    r = r * (1.5 - half * r * r)
    r = r * (1.5 - half * r * r)
    return x * r
}
