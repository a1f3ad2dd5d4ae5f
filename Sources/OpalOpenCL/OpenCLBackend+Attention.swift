import Foundation
import OpalCore
import OpenCLKit

// The Transformer op set on OpenCL: fused scaled-dot-product attention (Kernels/attention.cl) and layer
// normalisation (Kernels/norm.cl). Attention runs a few query (or key) rows per work-item (one on GPUs, a
// register tile of 4 on CPUs; `AttentionParameters`) with the other operand streamed through local memory in
// tiles, so nothing of size Nq × Nk is ever allocated; its programs are compiled once per head dimension. The backward pass is Δ, then dK/dV (one writer per key row), then dQ (one
// writer per query row): no atomics, deterministic. Layer norm runs one work-group per row, and its dγ / dβ
// column sums go through per-chunk partial sums reduced in chunk order.

/// The attention kernels of each backend, one compiled program per head dimension (an extension cannot add
/// stored properties to `OpenCLBackend`, and its kernel table holds one program per kernel family).
private final class AttentionKernelTable: @unchecked Sendable {
    // @unchecked: `entries` is only touched under `lock`, which is also held from the first `clSetKernelArg`
    // of a launch until it is enqueued (`clSetKernelArg` is not thread-safe; these kernels are used nowhere else).
    private struct Key: Hashable {
        let programs: ObjectIdentifier
        let kernel: OpenCLKernel
        let headDimension: Int
        let parameters: AttentionParameters
    }

    private struct Entry {
        /// The cache the kernel came from: a key whose cache has gone (and whose identifier was reused) is stale.
        weak var programs: ProgramCache?
        let kernel: CLKernel
        let maximumWorkGroupSize: Int
    }

    private let lock = NSLock()
    private var entries: [Key: Entry] = [:]

    /// Parameters every backend uses instead of its device's entry (nil: the entry); see
    /// `OpenCLBackend.attentionParametersOverride`. Starts as OPAL_ATTENTION_PARAMETERS, when set and valid.
    private var override: AttentionParameters? = ProcessInfo.processInfo
        .environment[AttentionParameters.overrideVariable].flatMap(AttentionParameters.init(specification:))

    static let shared = AttentionKernelTable()

    var parametersOverride: AttentionParameters? {
        get { lock.withLock { override } }
        set { lock.withLock { override = newValue } }
    }

    /// The attention parameters `backend`'s launches use now.
    func parameters(of backend: OpenCLBackend) -> AttentionParameters {
        lock.withLock { override ?? backend.parameters.attention }
    }

    /// Builds (once) `kernel` for `backend` with head dimension `headDimension` and `parameters`, then sets
    /// `arguments` and enqueues it on `backend.queue` with `local = [G, 1]`, G = rows / rowsPerItem (a power of
    /// two ≤ the kernel's limit) and `global = [⌈count / (G·rowsPerItem)⌉·G, problems]`, all under the lock.
    func launch(_ kernel: OpenCLKernel, on backend: OpenCLBackend, headDimension: Int, parameters: AttentionParameters,
                _ arguments: [OpenCLBackend.KernelArgument], count: Int, problems: Int, rows: Int,
                rowsPerItem: Int = 1) throws {
        try lock.withLock {
            let key = Key(programs: ObjectIdentifier(backend.programs), kernel: kernel, headDimension: headDimension,
                          parameters: parameters)
            let entry: Entry
            if let cached = entries[key], cached.programs === backend.programs {
                entry = cached
            } else {
                entries = entries.filter { $0.value.programs != nil }   // drop kernels of backends that are gone
                let source = try KernelSources.source(named: kernel.family)
                let options = backend.parameters.buildOptions + " "
                    + parameters.buildOptions(
                        headDimension: headDimension,
                        deviceLocalMemory: Int(clamping: backend.device.localMemoryBytes))
                let object = try backend.programs.kernel(source: source, options: options, name: kernel.rawValue)
                entry = Entry(programs: backend.programs, kernel: object,
                              maximumWorkGroupSize: try object.maxWorkGroupSize(device: backend.device))
                entries[key] = entry
            }
            try OpenCLBackend.setArguments(arguments, of: entry.kernel, name: kernel.rawValue)
            // Halved while half the group would cover every row (short sequences): no idle work-items.
            var local = largestPowerOfTwo(atMost: max(1, min(rows / max(1, rowsPerItem), entry.maximumWorkGroupSize)))
            while local > 1 && (local / 2) * rowsPerItem >= count { local /= 2 }
            let groups = (count + local * rowsPerItem - 1) / (local * rowsPerItem)
            try backend.enqueueRecorded(entry.kernel, name: kernel.rawValue, global: [max(1, groups) * local, problems],
                                        local: [local, 1])
        }
    }
}

extension OpenCLBackend {
    /// Attention parameters that every OpenCL backend uses instead of its device's entry (nil, the default:
    /// the entry of `KernelParameterTable`, or OPAL_ATTENTION_PARAMETERS). For tests and tuning: lets one device
    /// run the GPU shapes too.
    public static var attentionParametersOverride: AttentionParameters? {
        get { AttentionKernelTable.shared.parametersOverride }
        set { AttentionKernelTable.shared.parametersOverride = newValue }
    }

    private func validate(_ d: AttentionDescriptor, _ op: String) throws {
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(d))") }
        guard d.scale.isFinite else {
            throw TensorError.invalidArgument(op: op, reason: "scale \(d.scale) must be finite (\(d))")
        }
    }

    private func validate(_ d: LayerNormDescriptor, _ op: String) throws {
        if let problem = d.problem { throw TensorError.invalidArgument(op: op, reason: "\(problem) (\(d))") }
    }

    /// Launches an attention kernel over `count` rows of each of the B·H problems.
    private func launchAttention(_ kernel: OpenCLKernel, _ arguments: [KernelArgument], count: Int,
                                 descriptor d: AttentionDescriptor, parameters p: AttentionParameters) throws {
        try AttentionKernelTable.shared.launch(kernel, on: self, headDimension: d.headDimension, parameters: p,
                                               arguments, count: count, problems: d.problems, rows: p.rowsPerGroup,
                                               rowsPerItem: kernel == .attentionBackwardKV ? p.keyRowsPerItem
                                                                                          : p.rowsPerItem)
    }

    /// The key mask (checked to hold B·Nk elements) and the `has_mask` flag; without a mask, `placeholder`
    /// stands in for it (the kernels never read it then).
    private func maskArguments(_ keyMask: (any DeviceBuffer)?, placeholder: OpenCLBuffer, _ op: String,
                               _ d: AttentionDescriptor) throws -> (buffer: KernelArgument, flag: KernelArgument) {
        guard let keyMask else { return (.buffer(placeholder.buffer), .int32(0)) }
        return (.buffer(try own(keyMask, op, elements: d.batch * d.keyLength).buffer), .int32(1))
    }

    /// `O = softmax(scale·Q·Kᵀ + mask)·V` and `L = logsumexp` per row, by `attention_forward`: a few query rows
    /// per work-item, K and V in tiles through local memory, an online softmax (see Kernels/attention.cl).
    /// - Parameters: query, output [B, H, Nq, D]; key, value [B, H, Nk, D]; keyMask int32 [B, Nk];
    ///   logSumExp [B, H, Nq].
    public func attentionForward(query: any DeviceBuffer, key: any DeviceBuffer, value: any DeviceBuffer,
                                 keyMask: (any DeviceBuffer)?, output: any DeviceBuffer, logSumExp: any DeviceBuffer,
                                 descriptor d: AttentionDescriptor) throws {
        let op = "attentionForward"
        try validate(d, op)
        let q = try own(query, op, elements: d.queryCount)
        let k = try own(key, op, elements: d.keyCount)
        let v = try own(value, op, elements: d.keyCount)
        let o = try own(output, op, elements: d.queryCount)
        let l = try own(logSumExp, op, elements: d.rowCount)
        let mask = try maskArguments(keyMask, placeholder: k, op, d)
        try launchAttention(.attentionForward, [
            .buffer(q.buffer), .buffer(k.buffer), .buffer(v.buffer), mask.buffer, .buffer(o.buffer), .buffer(l.buffer),
            .int(d.heads), .int(d.queryLength), .int(d.keyLength), .int32(d.causal ? 1 : 0), mask.flag,
            .float(d.scale),
        ], count: d.queryLength, descriptor: d, parameters: AttentionKernelTable.shared.parameters(of: self))
    }

    /// Three launches: `Δ_i = dO_i·O_i` into a pooled [B·H·Nq] scratch buffer, then dK and dV (work-items own
    /// key rows and walk the queries that see them), then dQ (work-items own query rows and walk their keys).
    public func attentionBackward(query: any DeviceBuffer, key: any DeviceBuffer, value: any DeviceBuffer,
                                  keyMask: (any DeviceBuffer)?, output: any DeviceBuffer, logSumExp: any DeviceBuffer,
                                  gradOutput: any DeviceBuffer, gradQuery: any DeviceBuffer, gradKey: any DeviceBuffer,
                                  gradValue: any DeviceBuffer, descriptor d: AttentionDescriptor) throws {
        let op = "attentionBackward"
        try validate(d, op)
        let q = try own(query, op, elements: d.queryCount)
        let k = try own(key, op, elements: d.keyCount)
        let v = try own(value, op, elements: d.keyCount)
        let o = try own(output, op, elements: d.queryCount)
        let l = try own(logSumExp, op, elements: d.rowCount)
        let dO = try own(gradOutput, op, elements: d.queryCount)
        let dQ = try own(gradQuery, op, elements: d.queryCount)
        let dK = try own(gradKey, op, elements: d.keyCount)
        let dV = try own(gradValue, op, elements: d.keyCount)
        let mask = try maskArguments(keyMask, placeholder: k, op, d)
        // Released at the end of this call: the queue is in order, so the pool hands it out again only to later work.
        let delta = try own(allocate(count: d.rowCount), op, elements: d.rowCount)

        let p = AttentionKernelTable.shared.parameters(of: self)
        try AttentionKernelTable.shared.launch(
            .attentionDelta, on: self, headDimension: d.headDimension, parameters: p,
            [.buffer(o.buffer), .buffer(dO.buffer), .buffer(delta.buffer), .int(d.rowCount)],
            count: d.rowCount, problems: 1, rows: parameters.workGroupSize)
        let geometry: [KernelArgument] = [.int(d.heads), .int(d.queryLength), .int(d.keyLength),
                                          .int32(d.causal ? 1 : 0), mask.flag, .float(d.scale)]
        try launchAttention(.attentionBackwardKV, [
            .buffer(q.buffer), .buffer(k.buffer), .buffer(v.buffer), mask.buffer, .buffer(l.buffer),
            .buffer(delta.buffer), .buffer(dO.buffer), .buffer(dK.buffer), .buffer(dV.buffer),
        ] + geometry, count: d.keyLength, descriptor: d, parameters: p)
        try launchAttention(.attentionBackwardQ, [
            .buffer(q.buffer), .buffer(k.buffer), .buffer(v.buffer), mask.buffer, .buffer(l.buffer),
            .buffer(delta.buffer), .buffer(dO.buffer), .buffer(dQ.buffer),
        ] + geometry, count: d.queryLength, descriptor: d, parameters: p)
    }

    /// `y = (x − μ)·rstd·γ + β` per row by `layer_norm_forward` (one work-group per row, one pass for the
    /// statistics); writes mean and rstd [rows].
    public func layerNormForward(_ x: any DeviceBuffer, gamma: any DeviceBuffer, beta: any DeviceBuffer,
                                 output: any DeviceBuffer, mean: any DeviceBuffer,
                                 reciprocalStandardDeviation: any DeviceBuffer, descriptor d: LayerNormDescriptor) throws {
        let op = "layerNormForward"
        try validate(d, op)
        let input = try own(x, op, elements: d.count)
        let g = try own(gamma, op, elements: d.columns), b = try own(beta, op, elements: d.columns)
        let y = try own(output, op, elements: d.count)
        let m = try own(mean, op, elements: d.rows), s = try own(reciprocalStandardDeviation, op, elements: d.rows)
        try launchRows(.layerNormForward, [
            .buffer(input.buffer), .buffer(g.buffer), .buffer(b.buffer), .buffer(y.buffer), .buffer(m.buffer),
            .buffer(s.buffer), .int(d.rows), .int(d.columns), .float(d.epsilon),
        ], rows: d.rows, columns: d.columns)
    }

    /// dx per row by `layer_norm_backward`; dγ and dβ as per-chunk column sums (`layer_norm_param_partial`)
    /// reduced in chunk order (`layer_norm_param_reduce`), the chunking a function of the geometry only.
    public func layerNormBackward(gradOutput: any DeviceBuffer, _ x: any DeviceBuffer, gamma: any DeviceBuffer,
                                  mean: any DeviceBuffer, reciprocalStandardDeviation: any DeviceBuffer,
                                  gradInput: any DeviceBuffer, gradGamma: any DeviceBuffer, gradBeta: any DeviceBuffer,
                                  descriptor d: LayerNormDescriptor) throws {
        let op = "layerNormBackward"
        try validate(d, op)
        let dy = try own(gradOutput, op, elements: d.count)
        let input = try own(x, op, elements: d.count)
        let g = try own(gamma, op, elements: d.columns)
        let m = try own(mean, op, elements: d.rows), s = try own(reciprocalStandardDeviation, op, elements: d.rows)
        let dx = try own(gradInput, op, elements: d.count)
        let dg = try own(gradGamma, op, elements: d.columns), db = try own(gradBeta, op, elements: d.columns)
        try launchRows(.layerNormBackward, [
            .buffer(dy.buffer), .buffer(input.buffer), .buffer(g.buffer), .buffer(m.buffer), .buffer(s.buffer),
            .buffer(dx.buffer), .int(d.rows), .int(d.columns),
        ], rows: d.rows, columns: d.columns)

        let chunk = d.parameterChunk, chunks = (d.rows + chunk - 1) / chunk
        // Released at the end of this call: the queue is in order, so the pool hands them out again only to later work.
        let partialGamma = chunks == 1 ? dg : try own(allocate(count: chunks * d.columns), op, elements: chunks * d.columns)
        let partialBeta = chunks == 1 ? db : try own(allocate(count: chunks * d.columns), op, elements: chunks * d.columns)
        let width = min(parameters.workGroupSize, smallestPowerOfTwo(atLeast: d.columns))
        try enqueue(.layerNormParamPartial, [
            .buffer(dy.buffer), .buffer(input.buffer), .buffer(m.buffer), .buffer(s.buffer),
            .buffer(partialGamma.buffer), .buffer(partialBeta.buffer), .int(d.rows), .int(d.columns), .int(chunk),
        ], global: { local in [roundUp(d.columns, to: local), chunks] },
           local: { limit in [largestPowerOfTwo(atMost: min(width, limit)), 1] })
        if chunks > 1 {
            try launch(.layerNormParamReduce, [
                .buffer(partialGamma.buffer), .buffer(partialBeta.buffer), .buffer(dg.buffer), .buffer(db.buffer),
                .int(d.columns), .int(chunks),
            ], count: d.columns)
        }
    }
}

extension LayerNormDescriptor {
    /// Rows per chunk of the dγ / dβ column sums: 32, or more so that there are at most 256 chunks.
    /// A function of the geometry only, so every device sums in the same order.
    var parameterChunk: Int { max(32, (rows + 255) / 256) }
}

extension OpenCLBackend: AttentionBackend {}
