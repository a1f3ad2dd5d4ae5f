import OpalCore

// Training-mode batch normalisation on OpenCL (Kernels/norm.cl): one work-group per channel reduces
// the channel's batch·spatial values in local memory, then normalises them (forward) or forms dx
// (backward) in the same launch; wide feature vectors (spatial 1) take one work-item per channel.

extension OpenCLBackend {
    /// `y = (x − mean_c)·invstd_c·γ_c + β_c`, mean and biased variance over batch and spatial;
    /// writes `mean` and `inverseStandardDeviation` = 1/√(var + ε).
    public func batchNormForward(_ input: any DeviceBuffer, _ gamma: any DeviceBuffer, _ beta: any DeviceBuffer,
                                 _ output: any DeviceBuffer, mean: any DeviceBuffer,
                                 inverseStandardDeviation: any DeviceBuffer, descriptor d: BatchNormDescriptor) throws {
        try d.validate("batchNormForward")
        let x = try own(input, "batchNormForward", elements: d.count)
        let g = try own(gamma, "batchNormForward", elements: d.channels)
        let b = try own(beta, "batchNormForward", elements: d.channels)
        let y = try own(output, "batchNormForward", elements: d.count)
        let m = try own(mean, "batchNormForward", elements: d.channels)
        let s = try own(inverseStandardDeviation, "batchNormForward", elements: d.channels)
        if d.usesFeatureKernels {
            try launch(.batchNormForwardFeatures, [
                .buffer(x.buffer), .buffer(g.buffer), .buffer(b.buffer), .buffer(y.buffer), .buffer(m.buffer),
                .buffer(s.buffer), .int(d.batch), .int(d.channels), .float(d.epsilon),
            ], count: d.channels)
            return
        }
        try launchChannels(.batchNormForward, [
            .buffer(x.buffer), .buffer(g.buffer), .buffer(b.buffer), .buffer(y.buffer), .buffer(m.buffer),
            .buffer(s.buffer), .int(d.batch), .int(d.channels), .int(d.spatial), .float(d.epsilon),
        ], descriptor: d)
    }

    /// With `x̂ = (x − mean)·invstd` and M = batch·spatial: `dβ_c = Σ dy`, `dγ_c = Σ dy·x̂`,
    /// `dx = γ_c·invstd_c/M · (M·dy − dβ_c − x̂·dγ_c)`.
    public func batchNormBackward(_ input: any DeviceBuffer, _ gradOutput: any DeviceBuffer, _ gamma: any DeviceBuffer,
                                  mean: any DeviceBuffer, inverseStandardDeviation: any DeviceBuffer,
                                  _ gradInput: any DeviceBuffer, _ gradGamma: any DeviceBuffer,
                                  _ gradBeta: any DeviceBuffer, descriptor d: BatchNormDescriptor) throws {
        try d.validate("batchNormBackward")
        let x = try own(input, "batchNormBackward", elements: d.count)
        let dy = try own(gradOutput, "batchNormBackward", elements: d.count)
        let g = try own(gamma, "batchNormBackward", elements: d.channels)
        let m = try own(mean, "batchNormBackward", elements: d.channels)
        let s = try own(inverseStandardDeviation, "batchNormBackward", elements: d.channels)
        let dx = try own(gradInput, "batchNormBackward", elements: d.count)
        let dg = try own(gradGamma, "batchNormBackward", elements: d.channels)
        let db = try own(gradBeta, "batchNormBackward", elements: d.channels)
        if d.usesFeatureKernels {
            try launch(.batchNormBackwardFeatures, [
                .buffer(x.buffer), .buffer(dy.buffer), .buffer(g.buffer), .buffer(m.buffer), .buffer(s.buffer),
                .buffer(dx.buffer), .buffer(dg.buffer), .buffer(db.buffer), .int(d.batch), .int(d.channels),
            ], count: d.channels)
            return
        }
        try launchChannels(.batchNormBackward, [
            .buffer(x.buffer), .buffer(dy.buffer), .buffer(g.buffer), .buffer(m.buffer), .buffer(s.buffer),
            .buffer(dx.buffer), .buffer(dg.buffer), .buffer(db.buffer),
            .int(d.batch), .int(d.channels), .int(d.spatial),
        ], descriptor: d)
    }

    /// One 2-D work-group per channel: local (Ls, Ln) with Ls ≤ spatial rounded up to a power of two and
    /// the rest of the work-group along the batch; global (Ls, Ln·channels).
    private func launchChannels(_ kernel: OpenCLKernel, _ arguments: [KernelArgument],
                                descriptor d: BatchNormDescriptor) throws {
        let spatialWidth = smallestPowerOfTwo(atLeast: d.spatial)
        let batchWidth = smallestPowerOfTwo(atLeast: d.batch)
        let workGroupSize = parameters.workGroupSize
        try enqueue(kernel, arguments, global: { total in
            // total = Ls·Ln; Ls = min(spatialWidth, total) recovers the split chosen below.
            let localSpatial = min(spatialWidth, total)
            return [localSpatial, total / localSpatial * d.channels]
        }, local: { limit in
            let cap = largestPowerOfTwo(atMost: min(workGroupSize, limit))
            let localSpatial = min(spatialWidth, cap)
            return [localSpatial, min(batchWidth, cap / localSpatial)]
        })
    }
}

extension BatchNormDescriptor {
    /// Features (spatial 1) of at least 64 channels: one work-item per channel (`*_features` in norm.cl)
    /// instead of a work-group per channel, whose barrier tree costs more than its few values.
    var usesFeatureKernels: Bool { spatial == 1 && channels >= 64 }

    /// Throws `TensorError.invalidArgument` naming `op` unless every extent is positive and ε ≥ 0.
    func validate(_ op: String) throws {
        guard batch > 0, channels > 0, spatial > 0 else {
            throw TensorError.invalidArgument(
                op: op, reason: "batch (\(batch)), channels (\(channels)) and spatial (\(spatial)) must be positive")
        }
        guard epsilon >= 0, epsilon.isFinite else {
            throw TensorError.invalidArgument(op: op, reason: "epsilon \(epsilon) must be finite and ≥ 0")
        }
        guard count <= Int(Int32.max) else {
            throw TensorError.invalidArgument(op: op, reason: "\(count) elements exceed the kernels' 32-bit indexing")
        }
    }
}
