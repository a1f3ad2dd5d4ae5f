import Foundation
import Opal
import OpalOpenCL
import OpenCLKit

/// `opal bench tune`: searches a small grid of kernel parameters per family on one OpenCL device and keeps
/// the fastest candidate whose results match the built-in parameters'.
///
/// For each candidate a fresh `OpenCLBackend` is opened with a `TuningRecord` holding just that candidate
/// (the built-in parameters: an empty record), so the candidate goes through exactly the code path a later
/// run takes when it reads the tuned file. Each candidate first runs a small awkward check case whose outputs
/// (NaN-poisoned first) must match the built-in parameters' within 1e-4 of their magnitude, else it is
/// rejected; then every shape of the family is timed (warm-up, then the median of `runs` runs between OpenCL
/// profiling markers). The score is the sum of the per-shape medians. Finally the built-in parameters and the
/// winner are timed again, alternating per shape (`confirmationRounds` each, the lowest median kept: the run
/// least disturbed by other processes), and the winner is kept only if it is still at least `minimumGain` (2 %)
/// faster; the reported times are these.
public struct KernelTuner {
    public let device: CLDevice
    public let index: Int
    /// A tiny grid (two or three candidates) and small shapes: for tests.
    public var quick: Bool
    /// Timed runs per shape and candidate (`quick`: 3).
    public var runs: Int
    public var warmup: Int
    /// The least time saved, as a fraction of the built-in parameters' time, for a winner to be kept (below it,
    /// the difference is within the noise of a shared machine).
    public var minimumGain = 0.02
    /// Alternating timings per shape when the winner is confirmed against the built-in parameters.
    public var confirmationRounds: Int

    public init(device: CLDevice, index: Int, quick: Bool = false) {
        self.device = device; self.index = index; self.quick = quick
        runs = quick ? 3 : 7
        warmup = quick ? 1 : 2
        confirmationRounds = quick ? 2 : 4
    }

    /// One candidate: its record (empty for the built-in parameters), its specification and its description.
    struct Candidate {
        var parameters: String?
        var description: String
        var record: TuningRecord
    }

    /// A workload set up on one backend: `run` enqueues it, `outputs` reads what it wrote.
    struct Workload {
        var run: () throws -> Void
        var outputs: () throws -> [[Float]]
    }

    /// A family's search: its candidates, the shapes to time and the check case.
    struct Search {
        var candidates: [Candidate]
        var shapes: [(name: String, make: (OpenCLBackend) throws -> Workload)]
        var check: (OpenCLBackend) throws -> Workload
    }

    /// Tunes `family` and returns the outcome (not yet stored; see `TuningStore.save`).
    /// - Throws: `TunerError` when the family cannot be tuned on this device or an override is set.
    public func tune(_ family: KernelFamily, progress: (String) -> Void = { _ in }) throws -> TunedFamily {
        let search = try self.search(for: family)
        let started = DispatchTime.now().uptimeNanoseconds
        progress("tune \(family.rawValue) on opencl:\(index) (\(device.name)): \(search.candidates.count) candidates, "
                 + "shapes \(search.shapes.map(\.name).joined(separator: ", "))")
        let baseline = try OpenCLBackend(device: device, index: index, tuning: TuningRecord(for: device))
        let expected = try outputs(of: search.check(baseline), on: baseline)

        var best: (candidate: Candidate, milliseconds: Double)?
        var rejected = 0
        for (number, candidate) in search.candidates.enumerated() {
            let label = "[\(number + 1)/\(search.candidates.count)] \(candidate.description)"
            do {
                let backend = try OpenCLBackend(device: device, index: index, tuning: candidate.record)
                if candidate.parameters != nil {
                    let actual = try outputs(of: search.check(backend), on: backend)
                    if let problem = mismatch(actual, expected) {
                        rejected += 1
                        progress("\(label): rejected, \(problem)")
                        continue
                    }
                }
                let milliseconds = try time(search, on: backend)
                progress("\(label): \(format(milliseconds)) ms")
                if best == nil || milliseconds < best!.milliseconds { best = (candidate, milliseconds) }
            } catch {
                rejected += 1
                progress("\(label): rejected, \(error)")
            }
        }
        guard let best, let builtIn = search.candidates.first else {
            throw TunerError.noCandidate(family: family.rawValue)
        }

        // Confirmation: the built-in parameters and the winner again, alternately; the lower total of each.
        var defaultMilliseconds = Double.infinity, tunedMilliseconds = Double.infinity
        var winner = best.candidate
        if winner.parameters != nil {
            progress("confirming: built-in parameters against \(winner.description)")
            let defaultBackend = try OpenCLBackend(device: device, index: index, tuning: builtIn.record)
            let tunedBackend = try OpenCLBackend(device: device, index: index, tuning: winner.record)
            (defaultMilliseconds, tunedMilliseconds) = try confirm(search, defaultBackend, tunedBackend)
            if tunedMilliseconds > defaultMilliseconds * (1 - minimumGain) {
                progress("the winner is not \(Int(minimumGain * 100)) % faster on confirmation "
                         + "(\(format(tunedMilliseconds)) ms against \(format(defaultMilliseconds)) ms): built-in parameters kept")
                winner = builtIn
                tunedMilliseconds = defaultMilliseconds
            }
        } else {
            defaultMilliseconds = best.milliseconds; tunedMilliseconds = best.milliseconds
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        progress("tune \(family.rawValue): \(format(defaultMilliseconds)) ms → \(format(tunedMilliseconds)) ms "
                 + "(\(winner.description)) in \(String(format: "%.0f", seconds)) s")
        return TunedFamily(parameters: winner.parameters, description: winner.description,
                           defaultMilliseconds: defaultMilliseconds, tunedMilliseconds: tunedMilliseconds,
                           candidates: search.candidates.count, rejected: rejected, shapes: search.shapes.map(\.name))
    }

    // MARK: Measuring

    private func outputs(of workload: Workload, on backend: OpenCLBackend) throws -> [[Float]] {
        try workload.run()
        try backend.synchronize()
        return try workload.outputs()
    }

    /// Why `actual` does not match `expected` (NaN, or a difference above 1e-4 of the largest magnitude), or nil.
    private func mismatch(_ actual: [[Float]], _ expected: [[Float]]) -> String? {
        guard actual.count == expected.count else { return "\(actual.count) outputs, expected \(expected.count)" }
        for (number, (a, e)) in zip(actual, expected).enumerated() {
            guard a.count == e.count else { return "output \(number): \(a.count) values, expected \(e.count)" }
            let scale = max(1, e.map { abs($0) }.max() ?? 0)
            for i in a.indices where !(abs(a[i] - e[i]) <= 1e-4 * scale) {
                return "output \(number)[\(i)] = \(a[i]), built-in parameters give \(e[i])"
            }
        }
        return nil
    }

    /// The sum over the shapes of the median time, in milliseconds.
    private func time(_ search: Search, on backend: OpenCLBackend) throws -> Double {
        let device = Device(backend: backend)
        var total = 0.0
        for shape in search.shapes {
            let workload = try shape.make(backend)
            total += try measure(on: device, warmup: warmup, runs: runs, workload.run).medianMilliseconds
        }
        return total
    }

    /// Per shape, `confirmationRounds` alternating medians of the built-in parameters and the winner, the lowest
    /// of each (the least disturbed by other processes); the sums over the shapes.
    private func confirm(_ search: Search, _ builtIn: OpenCLBackend, _ winner: OpenCLBackend) throws
        -> (builtIn: Double, winner: Double) {
        let devices = (Device(backend: builtIn), Device(backend: winner))
        var totals = (0.0, 0.0)
        for shape in search.shapes {
            let workloads = (try shape.make(builtIn), try shape.make(winner))
            var best = (Double.infinity, Double.infinity)
            for round in 0..<confirmationRounds {
                let w = round == 0 ? warmup : 0
                best.0 = min(best.0, try measure(on: devices.0, warmup: w, runs: runs, workloads.0.run).medianMilliseconds)
                best.1 = min(best.1, try measure(on: devices.1, warmup: w, runs: runs, workloads.1.run).medianMilliseconds)
            }
            totals.0 += best.0; totals.1 += best.1
        }
        return totals
    }

    private func format(_ milliseconds: Double) -> String {
        milliseconds < 10 ? String(format: "%.3f", milliseconds) : String(format: "%.1f", milliseconds)
    }

    // MARK: Families

    func search(for family: KernelFamily) throws -> Search {
        switch family {
        case .gemm: return try gemmSearch()
        case .conv: return try convSearch()
        case .attention: return try attentionSearch()
        case .recurrent: return try recurrentSearch()
        }
    }

    private func builtIn() -> Candidate {
        Candidate(parameters: nil, description: "built-in parameters", record: TuningRecord(for: device))
    }

    private func candidate(_ family: KernelFamily, _ parameters: String, _ description: String) -> Candidate {
        var record = TuningRecord(for: device)
        record[family] = TunedFamily(parameters: parameters, description: description, defaultMilliseconds: 0,
                                     tunedMilliseconds: 0, candidates: 0, rejected: 0, shapes: [])
        return Candidate(parameters: parameters, description: description, record: record)
    }

    /// Seeded values in [-1, 1] in a new buffer of `backend`.
    private static func uniform(_ count: Int, seed: UInt64, on backend: OpenCLBackend) throws -> any DeviceBuffer {
        var generator = SeededGenerator(seed: seed)
        let values = (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
        let buffer = try backend.allocate(count: max(1, count))
        try backend.write(values, to: buffer)
        return buffer
    }

    /// A buffer of `count` NaNs.
    private static func poisoned(_ count: Int, on backend: OpenCLBackend) throws -> any DeviceBuffer {
        let buffer = try backend.allocate(count: max(1, count))
        try backend.write([Float](repeating: .nan, count: max(1, count)), to: buffer)
        return buffer
    }

    // GEMM: `GemmParameters` of gemm_fast.

    private func gemmSearch() throws -> Search {
        if ProcessInfo.processInfo.environment[GemmParameters.overrideVariable] != nil {
            throw TunerError.overrideSet(variable: GemmParameters.overrideVariable, family: "gemm")
        }
        let limit = device.maxWorkGroupSize
        var standard = TuningStore.builtInParameters(for: device).gemm
        standard.preferredEngine = .opal
        var grid: [GemmParameters] = []
        func add(_ tiles: (Int, Int, Int), _ block: (Int, Int), _ vectorWidth: Int, local: Bool) {
            let p = GemmParameters(tileM: tiles.0, tileN: tiles.1, tileK: tiles.2, workPerItemM: block.0,
                                   workPerItemN: block.1, vectorWidth: vectorWidth, stagesThroughLocalMemory: local,
                                   preferredEngine: .opal)
            // The built-in entry with the `.opal` engine is itself a candidate where CLBlast is the default.
            let duplicate = p == standard && TuningStore.builtInParameters(for: device).gemm.preferredEngine == .opal
            if p.isValid(maximumWorkGroupSize: limit) && !grid.contains(p) && !duplicate { grid.append(p) }
        }
        if TuningStore.builtInParameters(for: device).gemm.preferredEngine != .opal {
            grid.append(standard)
        }
        if quick {
            add((32, 32, 16), (4, 16), 8, local: false)
            add((32, 32, 16), (4, 4), 4, local: true)
        } else if device.type == .cpu {
            // Direct reads: register blocks of 4–16 rows × 16–64 columns in 8- or 16-wide vectors, 64² or 128² tiles
            // (work per group); plus the local-memory variant of the CPU default.
            for block in [(8, 32), (4, 32), (16, 32), (8, 16), (4, 64), (8, 64), (16, 16)] {
                add((64, 64, 16), block, 16, local: false)
            }
            for block in [(8, 16), (16, 16)] { add((64, 64, 16), block, 8, local: false) }
            for block in [(8, 32), (4, 32), (8, 64)] { add((128, 128, 16), block, 16, local: false) }
            add((64, 64, 16), (8, 16), 8, local: true)
        } else {
            // GPUs: tiles through local memory.
            for tiles in [(64, 64, 16), (128, 64, 16), (64, 128, 16), (128, 128, 16), (64, 64, 32)] {
                for (block, width) in [((4, 4), 4), ((8, 4), 4), ((4, 8), 8), ((8, 8), 8)] {
                    add(tiles, block, width, local: true)
                }
            }
        }
        let sizes: [(m: Int, n: Int, k: Int)] = quick ? [(64, 64, 64), (100, 70, 30)]
            : [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (1000, 700, 300)]
        let shapes = sizes.map { size in
            (name: "\(size.m)×\(size.n)×\(size.k)", make: { (backend: OpenCLBackend) throws -> Workload in
                let a = try Self.uniform(size.m * size.k, seed: 1, on: backend)
                let b = try Self.uniform(size.k * size.n, seed: 2, on: backend)
                let c = try backend.allocate(count: size.m * size.n)
                let d = GemmDescriptor(m: size.m, n: size.n, k: size.k)
                return Workload(run: { try backend.gemm(a, b, c, descriptor: d) },
                                outputs: { [try backend.readFloats(c, count: size.m * size.n)] })
            })
        }
        return Search(
            candidates: [builtIn()] + grid.map { candidate(.gemm, $0.specification, "\($0)") },
            shapes: shapes,
            check: { backend in
                // Awkward extents, B transposed on one product (the packing path), C poisoned.
                var workloads: [(GemmDescriptor, any DeviceBuffer, any DeviceBuffer, any DeviceBuffer)] = []
                for (m, n, k, transposeB) in [(67, 45, 33, false), (13, 70, 129, true)] {
                    let d = GemmDescriptor(transposeA: false, transposeB: transposeB, m: m, n: n, k: k)
                    workloads.append((d, try Self.uniform(m * k, seed: 5, on: backend),
                                      try Self.uniform(k * n, seed: 6, on: backend), try Self.poisoned(m * n, on: backend)))
                }
                return Workload(run: { for (d, a, b, c) in workloads { try backend.gemm(a, b, c, descriptor: d) } },
                                outputs: { try workloads.map { try backend.readFloats($0.3, count: $0.0.m * $0.0.n) } })
            })
    }

    // Convolution: `ConvParameters` of conv_forward_implicit_rows (the CPU-class forward kernel).

    private func convSearch() throws -> Search {
        guard device.type == .cpu else {
            throw TunerError.nothingToTune(family: "conv", reason: "on \(device.name) the convolution forward pass "
                + "runs im2col + GEMM (its tunable part is `opal bench tune gemm`); the vector-rows kernel whose "
                + "CONV_VM and work-group this family tunes runs on CPU devices")
        }
        let limit = device.maxWorkGroupSize
        let standard = TuningStore.builtInParameters(for: device).conv
        var grid: [ConvParameters] = []
        let pairs = quick ? [(4, 8), (8, 16)]
            : [(4, 8), (12, 8), (16, 8), (8, 1), (8, 4), (8, 16), (8, 32), (4, 16), (16, 4), (12, 4)]
        for (channels, group) in pairs {
            let p = ConvParameters(channelsPerItem: channels, workGroupSize: group)
            if p.isValid(maximumWorkGroupSize: limit), p != standard { grid.append(p) }
        }
        let descriptors: [(String, Conv2DDescriptor)] = quick
            ? [("conv 2×3×12×12→8 3×3", Conv2DDescriptor(batch: 2, inputChannels: 3, inputHeight: 12, inputWidth: 12,
                                                          outputChannels: 8, kernelHeight: 3, kernelWidth: 3,
                                                          paddingHeight: 1, paddingWidth: 1))]
            : [("R2 conv1 (64×1×28×28→32)", ConvBenchmark.r2Shapes[0].descriptor),
               ("R2 conv2 (64×32×14×14→64)", ConvBenchmark.r2Shapes[1].descriptor),
               ("K2 3×3 at batch 4", Conv2DDescriptor(batch: 4, inputChannels: 64, inputHeight: 56, inputWidth: 56,
                                                      outputChannels: 64, kernelHeight: 3, kernelWidth: 3,
                                                      paddingHeight: 1, paddingWidth: 1)),
               ("K2 7×7 s2 at batch 2", Conv2DDescriptor(batch: 2, inputChannels: 3, inputHeight: 224, inputWidth: 224,
                                                         outputChannels: 64, kernelHeight: 7, kernelWidth: 7,
                                                         strideHeight: 2, strideWidth: 2, paddingHeight: 3,
                                                         paddingWidth: 3))]
        func workload(_ d: Conv2DDescriptor, on backend: OpenCLBackend, poison: Bool) throws -> Workload {
            let x = try Self.uniform(d.inputCount, seed: 7, on: backend)
            let w = try Self.uniform(d.weightCount, seed: 8, on: backend)
            let bias = try Self.uniform(d.outputChannels, seed: 9, on: backend)
            let y = poison ? try Self.poisoned(d.outputCount, on: backend) : try backend.allocate(count: d.outputCount)
            return Workload(run: { try backend.conv2D(x, w, bias, y, descriptor: d, algorithm: .implicitGemm) },
                            outputs: { [try backend.readFloats(y, count: d.outputCount)] })
        }
        // 7 output channels (not a multiple of any CONV_VM), an odd width, stride 1 and 2.
        let checks = [
            Conv2DDescriptor(batch: 2, inputChannels: 5, inputHeight: 13, inputWidth: 19, outputChannels: 7,
                             kernelHeight: 3, kernelWidth: 3, paddingHeight: 1, paddingWidth: 1),
            Conv2DDescriptor(batch: 1, inputChannels: 3, inputHeight: 21, inputWidth: 37, outputChannels: 19,
                             kernelHeight: 5, kernelWidth: 5, strideHeight: 2, strideWidth: 2, paddingHeight: 2,
                             paddingWidth: 2),
        ]
        return Search(
            candidates: [builtIn()] + grid.map { candidate(.conv, $0.specification, "\($0)") },
            shapes: descriptors.map { name, d in
                (name: name, make: { backend in try workload(d, on: backend, poison: false) })
            },
            check: { backend in
                let parts = try checks.map { try workload($0, on: backend, poison: true) }
                return Workload(run: { for part in parts { try part.run() } },
                                outputs: { try parts.flatMap { try $0.outputs() } })
            })
    }

    // Attention: `AttentionParameters` of the fused attention kernels.

    private func attentionSearch() throws -> Search {
        if ProcessInfo.processInfo.environment[AttentionParameters.overrideVariable] != nil
            || OpenCLBackend.attentionParametersOverride != nil {
            throw TunerError.overrideSet(variable: AttentionParameters.overrideVariable, family: "attention")
        }
        let base = TuningStore.builtInParameters(for: device).attention
        var grid: [AttentionParameters] = []
        func add(_ change: (inout AttentionParameters) -> Void) {
            var p = base
            change(&p)
            if p != base && !grid.contains(p) { grid.append(p) }
        }
        if quick {
            add { $0.rowsPerGroup /= 2 }
            add { $0.vectorWidth = $0.vectorWidth == 4 ? 8 : 4 }
        } else if device.type == .cpu {
            // One axis at a time around the CPU entry (512 rows per group, 4 rows per item, float16, tiles ≤ 16).
            add { $0.rowsPerGroup = 256 }
            add { $0.rowsPerGroup = 1024 }
            add { $0.rowsPerItem = 2; $0.keyRowsPerItem = 2 }
            add { $0.rowsPerItem = 8; $0.keyRowsPerItem = 8 }
            add { $0.keyRowsPerItem = 2 }
            add { $0.vectorWidth = 8 }
            add { $0.maximumTile = 32 }
            add { $0.vectorWidth = 8; $0.rowsPerItem = 8; $0.keyRowsPerItem = 8 }
        } else {
            for rows in [32, 128, 256] { add { $0.rowsPerGroup = rows } }
            add { $0.rowsPerItem = 2; $0.keyRowsPerItem = 2 }
            add { $0.vectorWidth = 8 }
            add { $0.maximumTile = 64 }
            add { $0.maximumTile = 16 }
            add { $0.rowsPerGroup = 128; $0.rowsPerItem = 2; $0.keyRowsPerItem = 2 }
        }
        func workload(_ d: AttentionDescriptor, on backend: OpenCLBackend, poison: Bool) throws -> Workload {
            let q = try Self.uniform(d.queryCount, seed: 11, on: backend)
            let k = try Self.uniform(d.keyCount, seed: 12, on: backend)
            let v = try Self.uniform(d.keyCount, seed: 13, on: backend)
            let g = try Self.uniform(d.queryCount, seed: 14, on: backend)
            func output(_ count: Int) throws -> any DeviceBuffer {
                poison ? try Self.poisoned(count, on: backend) : try backend.allocate(count: count)
            }
            let o = try output(d.queryCount), l = try output(d.rowCount)
            let dq = try output(d.queryCount), dk = try output(d.keyCount), dv = try output(d.keyCount)
            return Workload(run: {
                try backend.attentionForward(query: q, key: k, value: v, keyMask: nil, output: o, logSumExp: l,
                                             descriptor: d)
                try backend.attentionBackward(query: q, key: k, value: v, keyMask: nil, output: o, logSumExp: l,
                                              gradOutput: g, gradQuery: dq, gradKey: dk, gradValue: dv, descriptor: d)
            }, outputs: {
                try [(o, d.queryCount), (l, d.rowCount), (dq, d.queryCount), (dk, d.keyCount), (dv, d.keyCount)]
                    .map { try backend.readFloats($0.0, count: $0.1) }
            })
        }
        let lengths = quick ? [40] : [256, 512]
        let batch = quick ? 1 : 2, heads = quick ? 2 : 4
        return Search(
            candidates: [builtIn()] + grid.map { candidate(.attention, $0.specification, "\($0)") },
            shapes: lengths.map { n in
                (name: "K3-like causal B\(batch) H\(heads) N\(n) D64, forward + backward", make: { backend in
                    try workload(AttentionDescriptor(batch: batch, heads: heads, queryLength: n, keyLength: n,
                                                     headDimension: 64, causal: true), on: backend, poison: false)
                })
            },
            check: { backend in
                try workload(AttentionDescriptor(batch: 1, heads: 2, queryLength: 37, keyLength: 37, headDimension: 64,
                                                 causal: true), on: backend, poison: true)
            })
    }

    // Recurrent: WGS, the work-group size of the 1-D kernels, on the K4 cell updates.

    private func recurrentSearch() throws -> Search {
        let limit = device.maxWorkGroupSize
        let standard = TuningStore.builtInParameters(for: device).workGroupSize
        let sizes = (quick ? [64, 512] : [16, 32, 64, 128, 256, 512, 1024]).filter { $0 <= limit && $0 != standard }
        func workload(_ d: RecurrentCellDescriptor, on backend: OpenCLBackend, poison: Bool,
                      repeats: Int) throws -> Workload {
            let units = d.stateCount
            func output(_ count: Int) throws -> any DeviceBuffer {
                poison ? try Self.poisoned(count, on: backend) : try backend.allocate(count: count)
            }
            let gates = try Self.uniform(4 * units, seed: 21, on: backend)
            let cell = try Self.uniform(units, seed: 22, on: backend)
            let dh = try Self.uniform(units, seed: 23, on: backend), dc = try Self.uniform(units, seed: 24, on: backend)
            let hidden = try output(units), newCell = try output(units), act = try output(5 * units)
            let dGates = try output(4 * units), dCell = try output(units)
            return Workload(run: {
                for _ in 0..<repeats {
                    try backend.lstmCellForward(gates, cell, hidden: hidden, newCell: newCell, activations: act,
                                                descriptor: d)
                    try backend.lstmCellBackward(gradHidden: dh, gradNewCell: dc, cell: cell, activations: act,
                                                 gradGates: dGates, gradCell: dCell, descriptor: d)
                }
            }, outputs: {
                try [(hidden, units), (newCell, units), (act, 5 * units), (dGates, 4 * units), (dCell, units)]
                    .map { try backend.readFloats($0.0, count: $0.1) }
            })
        }
        // K4's cell: batch 64, hidden 512, one time step forward and backward; 16 steps per timed run.
        let shape = quick ? RecurrentCellDescriptor(batch: 4, hiddenSize: 40)
            : RecurrentCellDescriptor(batch: 64, hiddenSize: 512)
        return Search(
            candidates: [builtIn()] + sizes.map { candidate(.recurrent, "\($0)", "work-groups of \($0) (WGS)") },
            shapes: [(name: "K4 LSTM cell B\(shape.batch) H\(shape.hiddenSize), forward + backward ×16",
                      make: { try workload(shape, on: $0, poison: false, repeats: 16) })],
            check: { try workload(RecurrentCellDescriptor(batch: 3, hiddenSize: 37), on: $0, poison: true, repeats: 1) })
    }
}

public enum TunerError: Error, CustomStringConvertible {
    case overrideSet(variable: String, family: String)
    case nothingToTune(family: String, reason: String)
    case noCandidate(family: String)

    public var description: String {
        switch self {
        case let .overrideSet(variable, family):
            "\(variable) is set and would replace every \(family) candidate: unset it to tune \(family)"
        case let .nothingToTune(family, reason): "nothing to tune for \(family): \(reason)"
        case let .noCandidate(family): "no \(family) candidate could be built and timed on this device"
        }
    }
}
