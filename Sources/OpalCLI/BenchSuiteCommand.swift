import ArgumentParser
import Foundation
import Opal
import OpalBenchmarks

/// `opal bench` (no subcommand): the whole suite on one device — the device's peak, K1 GEMM, K2 convolution,
/// K3 attention, K4/K5 LSTM/GRU layers and the R1–R6 training steps — one line per entry, each beside its
/// reference measured in the same run and, with `--compare`, beside PyTorch and tinygrad.
///
/// The families are timed by the same benchmark types as `opal bench gemm|conv|attention|lstm|gru|train …`;
/// this command only chooses their sizes and run counts, and gathers the rows into one table or one JSON
/// document (schema `opal-bench-suite/1`, described in `Benchmarks/README.md`).
struct BenchSuiteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suite",
        abstract: "The whole suite on one device: peak, K1–K5 kernels, R1–R6 training steps; --compare pytorch,tinygrad.",
        discussion: """
        Entry ids: K1-<n> (SGEMM n³), K2-3x3|7x7s2-fwd|bwd-data|bwd-weight, K3-N<n>, K4, K5, R1 … R6. \
        --only takes entry ids or family ids (K1 … K5, R1 … R6). Progress goes to standard error; the table \
        (or with --json the JSON document) to standard output. Ratios are time ratios: Opal's median over the \
        other's, below 1 when Opal is faster.
        """)

    @OptionGroup var deviceOptions: DeviceOptions

    @Option(help: "Timed runs per entry (after warm-up). Default: per family — K1 10, K2 5, K3/K4/K5 3 (10 on GPUs), R1–R6 as many steps as fit in 3 s (5 to 50; --quick: 1 s, 3 to 50).")
    var runs: Int?

    @Flag(help: "Print the JSON document (schema opal-bench-suite/1) instead of the table.")
    var json = false

    @Option(help: "Peers to run in the same run: pytorch, tinygrad, pytorch,tinygrad or none.")
    var compare = "none"

    @Option(help: "Comma-separated entry or family ids to run (e.g. K1,R6 or K1-512,K3-N1024); default: all.")
    var only: String?

    @Flag(help: "Smaller sizes (K1 256/512, K2 batch 4, K3 N 256, K4/K5 batch 16 seq 32) and fewer training steps.")
    var quick = false

    @Option(help: "Instead of the suite: tune a kernel family for the device (forwards to `opal bench tune <family>`).")
    var tune: String?

    @Option(help: "Threads for the PyTorch CPU reference (default: the processor count).")
    var threads: Int?

    var compared: [String] {
        compare.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            .filter { !$0.isEmpty && $0 != "none" }
    }

    var selection: [String]? {
        only.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }

    func validate() throws {
        if let runs, runs <= 0 { throw ValidationError("--runs must be positive, got \(runs)") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive, got \(threads)") }
        let peers = compare.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        for peer in peers where !["pytorch", "tinygrad", "none"].contains(peer) {
            throw ValidationError("--compare takes pytorch, tinygrad, pytorch,tinygrad or none; got '\(peer)'")
        }
        if let selection {
            guard !selection.isEmpty else { throw ValidationError("--only needs at least one id, e.g. --only K1,R6") }
            let plan = SuitePlan(quick: quick)
            for id in selection where !plan.knows(id) {
                throw ValidationError("unknown benchmark id '\(id)' in --only; known families: \(SuitePlan.families.joined(separator: ", ")); entries: \(plan.allIDs.joined(separator: ", "))")
            }
        }
    }

    func run() throws {
        if let tune {
            var command: any ParsableCommand = try BenchTuneCommand.parse([tune] + (deviceOptions.device.map { ["--device", $0] } ?? []))
            return try command.run()
        }
        let started = DispatchTime.now().uptimeNanoseconds
        let device = try deviceOptions.resolve()
        var plan = SuitePlan(quick: quick)
        plan.selection = selection
        let progress: (String) -> Void = { printError($0) }
        progress("opal bench on \(device.name) (\(device.backend.deviceDescription)): \(plan.selectedIDs.count) entries\(quick ? ", quick sizes" : "")…")
        let peak: DevicePeak?
        do { peak = try PeakProbe.peak(for: device) } catch {
            progress("peak: not measured (\(error))")
            peak = nil
        }
        let runner = SuiteRunner(device: device, plan: plan, runs: runs, peak: peak, progress: progress)
        var entries = runner.runOpal()
        var peers: [String: SuitePeerStatus] = [:]
        for peer in [PythonPeer.pytorch, PythonPeer.tinygrad] {
            guard compared.contains(peer.name) else {
                peers[peer.name] = SuitePeerStatus(status: "not compared", note: "add --compare \(peer.name)")
                continue
            }
            peers[peer.name] = runner.runPeer(peer, threads: threads ?? ProcessInfo.processInfo.activeProcessorCount,
                                              into: &entries)
        }
        let report = SuiteReport(
            date: ISO8601DateFormatter().string(from: Date()), device: device.name,
            deviceDescription: device.backend.deviceDescription, peak: peak, quick: quick, runs: runs,
            only: selection, compare: compared, peers: peers,
            wallSeconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9,
            entries: entries)
        if json { return try printJSON(report) }
        printTable(report)
    }

    func printTable(_ report: SuiteReport) {
        let compared = self.compared
        print("opal bench on \(report.device) (\(report.deviceDescription)) · \(report.date) · \(quick ? "quick sizes" : "full sizes") · \(runs.map { "\($0) runs each" } ?? "runs per family")")
        if let peak = report.peak { print(peakLine(peak)) } else { print("device peak: unknown (`opal bench peak` measures it)") }
        var header = left("id", 18) + left("what", 42) + pad("opal ms", 11) + pad("p10–p90 ms", 20) + pad("GFLOP/s", 9)
            + pad("% peak", 8) + pad("GB/s", 8) + "  " + left("reference", 22) + pad("ref ms", 10) + pad("opal/ref", 9)
        if compared.contains("pytorch") { header += pad("torch ms", 10) + pad("opal/torch", 11) }
        if compared.contains("tinygrad") { header += pad("tinygrad ms", 12) + pad("opal/tg", 9) }
        print(header)
        for entry in report.entries {
            var line = left(entry.id, 18) + left(entry.what, 42)
            if let time = entry.opal {
                line += pad(format(time.medianMilliseconds, 3), 11)
                    + pad(format(time.p10Milliseconds, 3) + "–" + format(time.p90Milliseconds, 3), 20)
                    + pad(entry.gigaflops.map { format($0, 1) } ?? "-", 9)
                    + pad(entry.percentOfPeak.map { format($0, 1) } ?? "-", 8)
                    + pad(entry.gigabytesPerSecond.map { format($0, 1) } ?? "-", 8)
            } else {
                line += pad("-", 11) + pad("-", 20) + pad("-", 9) + pad("-", 8) + pad("-", 8)
            }
            if let reference = entry.reference {
                line += "  " + left(reference.name, 22) + pad(format(reference.time.medianMilliseconds, 3), 10)
                    + pad(entry.opalOverReference.map { format($0) + "×" } ?? "-", 9)
            } else {
                line += "  " + left("-", 22) + pad("-", 10) + pad("-", 9)
            }
            for peer in ["pytorch", "tinygrad"] where compared.contains(peer) {
                let figure = entry.peers[peer]
                line += pad(figure?.milliseconds.map { format($0, 3) } ?? "-", peer == "pytorch" ? 10 : 12)
                    + pad(figure?.opalOverPeer(entry).map { format($0) + "×" } ?? "-", peer == "pytorch" ? 11 : 9)
            }
            print(line)
        }
        // Notes, each text once with the entries it belongs to.
        var notes: [(text: String, ids: [String])] = []
        func note(_ text: String?, _ id: String) {
            guard let text else { return }
            if let index = notes.firstIndex(where: { $0.text == text }) { notes[index].ids.append(id) } else { notes.append((text, [id])) }
        }
        for entry in report.entries {
            note(entry.note, entry.id)
            for peer in ["pytorch", "tinygrad"] { note(entry.peers[peer]?.note.map { "\(peer): \($0)" }, entry.id) }
        }
        for (text, ids) in notes { print("\(ids.joined(separator: ", ")): \(text)") }
        for peer in ["pytorch", "tinygrad"] where compared.contains(peer) {
            if let status = report.peers[peer] { print("\(peer): \(status.summary)") }
        }
        for line in goalLines(report) { print(line) }
        print("ratios are Opal's median time over the other's (below 1: Opal faster) · timing: \(Set(report.entries.compactMap { $0.opal?.clock }).sorted().joined(separator: ", ")) · wall time \(format(report.wallSeconds, 0)) s")
    }

    /// The issue's goals, with the verdicts the measured figures give.
    func goalLines(_ report: SuiteReport) -> [String] {
        var lines: [String] = []
        let steps = report.entries.filter { $0.family.hasPrefix("R") }
        /// "met" or "not met by …", the ratios, and the entries without a figure (which meet nothing).
        func verdict(_ ratios: [(String, Double)], limit: Double, of ids: [String]) -> String {
            guard !ratios.isEmpty else { return "no figures" }
            let failing = ratios.filter { $0.1 > limit }
            let missing = ids.filter { id in !ratios.contains { $0.0 == id } }
            var list = ratios.map { "\($0.0) \(format($0.1))×" }.joined(separator: ", ")
            if !missing.isEmpty { list += "; no figure for \(missing.joined(separator: ", "))" }
            let met = failing.isEmpty && missing.isEmpty
            return (met ? "met" : failing.isEmpty ? "not shown" : "not met by \(failing.map(\.0).joined(separator: ", "))") + ": " + list
        }
        if report.device == "cpu", compared.contains("pytorch") {
            let ratios = steps.compactMap { entry in entry.peers["pytorch"]?.opalOverPeer(entry).map { (entry.id, $0) } }
            lines.append("goal on the native CPU, every R step ≤ 0.8× PyTorch CPU: " + verdict(ratios, limit: 0.8, of: steps.map(\.id)))
        }
        if report.device.hasPrefix("opencl") {
            let gemm = report.entries.filter { $0.family == "K1" && (Int($0.id.dropFirst(3)) ?? 0) >= 512 }
                .compactMap { entry in entry.opalOverReference.map { (entry.id, $0) } }
            if !gemm.isEmpty, report.entries.first(where: { $0.family == "K1" })?.reference?.name == "CLBlast" {
                lines.append("goal on OpenCL, GEMM ≥ 2× CLBlast for n ≥ 512 (opal/ref ≤ 0.5): " + verdict(gemm, limit: 0.5, of: gemm.map(\.0)))
            }
            if compared.contains("tinygrad") {
                let ratios = steps.compactMap { entry in entry.peers["tinygrad"]?.opalOverPeer(entry).map { (entry.id, $0) } }
                lines.append("goal on OpenCL, every R step ≥ 2× faster than tinygrad (opal/tg ≤ 0.5): " + verdict(ratios, limit: 0.5, of: steps.map(\.id)))
            }
        }
        return lines
    }
}

/// Left-aligns `text` in `width` columns.
func left(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

// MARK: - The plan: which entries exist and which are selected

/// The suite's entries for a size choice, and the `--only` selection.
struct SuitePlan {
    static let families = ["K1", "K2", "K3", "K4", "K5", "R1", "R2", "R3", "R4", "R5", "R6"]

    let quick: Bool
    var selection: [String]?

    init(quick: Bool) { self.quick = quick }

    var gemmSizes: [Int] { quick ? [256, 512] : [256, 512, 1024, 2048, 4096] }
    var convShapes: [(id: String, shape: ConvBenchmark.Shape)] {
        let ids = ["3x3", "7x7s2"]
        return zip(ids, ConvBenchmark.k2Shapes).map { id, shape in
            var shape = shape
            if quick { shape.descriptor.batch = 4 }
            return (id, shape)
        }
    }
    static let convPasses: [(id: String, pass: ConvBenchmark.Pass)] = [("fwd", .forward), ("bwd-data", .backwardData), ("bwd-weight", .backwardWeight)]
    var attentionSizes: [Int] { quick ? [256] : AttentionBenchmark.issueSizes }
    var recurrentShape: RecurrentBenchmark.Shape {
        quick ? RecurrentBenchmark.Shape(batch: 16, sequenceLength: 32, inputSize: 256, hiddenSize: 512) : .issue
    }

    /// Every entry id in suite order, with its family.
    var all: [(id: String, family: String)] {
        var ids = gemmSizes.map { ("K1-\($0)", "K1") }
        for shape in convShapes { for pass in Self.convPasses { ids.append(("K2-\(shape.id)-\(pass.id)", "K2")) } }
        ids += attentionSizes.map { ("K3-N\($0)", "K3") }
        ids += ["K4", "K5", "R1", "R2", "R3", "R4", "R5", "R6"].map { ($0, $0) }
        return ids
    }

    var allIDs: [String] { all.map(\.id) }

    func knows(_ id: String) -> Bool { Self.families.contains(id) || allIDs.contains(id) }

    func isSelected(_ id: String) -> Bool {
        guard let selection else { return true }
        let family = all.first { $0.id == id }?.family ?? id
        return selection.contains(id) || selection.contains(family)
    }

    var selectedIDs: [String] { allIDs.filter(isSelected) }
}

// MARK: - The report

/// Opal's benchmark timing summary (not Foundation's `Measurement`).
typealias BenchMeasurement = OpalBenchmarks.Measurement

/// One timed figure of a peer for an entry.
struct SuitePeerFigure: Encodable {
    var milliseconds: Double?
    var note: String?

    func opalOverPeer(_ entry: SuiteEntry) -> Double? {
        guard let opal = entry.opal?.medianMilliseconds, let milliseconds, milliseconds > 0 else { return nil }
        return opal / milliseconds
    }
}

/// Opal's reference for an entry, measured in the same run.
struct SuiteReference {
    var name: String
    var time: BenchMeasurement
}

/// One line of the suite.
struct SuiteEntry {
    var id: String
    var family: String
    var what: String
    var opal: BenchMeasurement?
    /// Floating-point operations of one run (as the family's benchmark counts them).
    var flops: Double?
    /// The bytes one run must move at least: every operand read once and every result written once
    /// (K1–K3; nil where the floor is not a simple count, as for the recurrent layers and training steps).
    var bytes: Double?
    var peak: DevicePeak?
    var reference: SuiteReference?
    var peers: [String: SuitePeerFigure] = [:]
    var note: String?

    var gigaflops: Double? {
        guard let flops, let time = opal?.medianMilliseconds else { return nil }
        return OpalBenchmarks.gigaflops(flops, milliseconds: time)
    }
    var percentOfPeak: Double? { gigaflops.flatMap { rate in peak.map { 100 * rate / $0.gigaflops } } }
    /// GB/s of the byte floor (`bytes` / median time).
    var gigabytesPerSecond: Double? {
        guard let bytes, let time = opal?.medianMilliseconds, time > 0 else { return nil }
        return bytes / time / 1e6
    }
    var opalOverReference: Double? {
        guard let opal = opal?.medianMilliseconds, let reference = reference?.time.medianMilliseconds, reference > 0 else { return nil }
        return opal / reference
    }
}

/// A peer's state in the run: measured, missing (with the install command), failed, or not compared.
struct SuitePeerStatus: Encodable {
    var status: String
    var version: String?
    var device: String?
    var note: String?

    var summary: String {
        [status, version.map { "version \($0)" }, device.map { "on \($0)" }, note].compactMap { $0 }.joined(separator: " · ")
    }

    enum CodingKeys: String, CodingKey { case status, version, device, note }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(status, forKey: .status)
        try container.encode(version, forKey: .version)
        try container.encode(device, forKey: .device)
        try container.encode(note, forKey: .note)
    }
}

/// The JSON document (`"schema": "opal-bench-suite/1"`): every key is always present (null where a figure is
/// missing), entries are keyed by id, units are in the key names. See `Benchmarks/README.md`.
struct SuiteReport: Encodable {
    static let schema = "opal-bench-suite/1"
    var date: String
    var device: String
    var deviceDescription: String
    var peak: DevicePeak?
    var quick: Bool
    var runs: Int?
    var only: [String]?
    var compare: [String]
    var peers: [String: SuitePeerStatus]
    var wallSeconds: Double
    var entries: [SuiteEntry]

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        var root = encoder.container(keyedBy: Key.self)
        try root.encode(Self.schema, forKey: Key("schema"))
        try root.encode(date, forKey: Key("date"))
        var deviceObject = root.nestedContainer(keyedBy: Key.self, forKey: Key("device"))
        try deviceObject.encode(device, forKey: Key("name"))
        try deviceObject.encode(deviceDescription, forKey: Key("description"))
        try deviceObject.encode(peak?.gigaflops, forKey: Key("peak_gflops"))
        try deviceObject.encode(peak?.gigabytesPerSecond, forKey: Key("peak_gbps"))
        try deviceObject.encode(peak?.method, forKey: Key("peak_method"))
        try deviceObject.encode(peak?.measured, forKey: Key("peak_measured"))
        var options = root.nestedContainer(keyedBy: Key.self, forKey: Key("options"))
        try options.encode(quick, forKey: Key("quick"))
        try options.encode(runs, forKey: Key("runs"))
        try options.encode(only, forKey: Key("only"))
        try options.encode(compare, forKey: Key("compare"))
        var peerObject = root.nestedContainer(keyedBy: Key.self, forKey: Key("peers"))
        for (name, status) in peers { try peerObject.encode(status, forKey: Key(name)) }
        try root.encode(wallSeconds, forKey: Key("wall_s"))
        var entryObject = root.nestedContainer(keyedBy: Key.self, forKey: Key("entries"))
        for entry in entries {
            var e = entryObject.nestedContainer(keyedBy: Key.self, forKey: Key(entry.id))
            try e.encode(entry.family, forKey: Key("family"))
            try e.encode(entry.what, forKey: Key("what"))
            try e.encode(entry.opal?.medianMilliseconds, forKey: Key("median_ms"))
            try e.encode(entry.opal?.p10Milliseconds, forKey: Key("p10_ms"))
            try e.encode(entry.opal?.p90Milliseconds, forKey: Key("p90_ms"))
            try e.encode(entry.opal?.runs, forKey: Key("runs"))
            try e.encode(entry.opal?.clock, forKey: Key("clock"))
            try e.encode(entry.flops.map { $0 / 1e9 }, forKey: Key("gflop_per_run"))
            try e.encode(entry.gigaflops, forKey: Key("gflops"))
            try e.encode(entry.percentOfPeak, forKey: Key("percent_of_peak"))
            try e.encode(entry.bytes.map { $0 / 1e9 }, forKey: Key("gbyte_floor_per_run"))
            try e.encode(entry.gigabytesPerSecond, forKey: Key("gbps"))
            if let reference = entry.reference {
                var r = e.nestedContainer(keyedBy: Key.self, forKey: Key("reference"))
                try r.encode(reference.name, forKey: Key("name"))
                try r.encode(reference.time.medianMilliseconds, forKey: Key("median_ms"))
                try r.encode(reference.time.p10Milliseconds, forKey: Key("p10_ms"))
                try r.encode(reference.time.p90Milliseconds, forKey: Key("p90_ms"))
                try r.encode(entry.opalOverReference, forKey: Key("opal_over_reference"))
            } else {
                try e.encodeNil(forKey: Key("reference"))
            }
            var peerFigures = e.nestedContainer(keyedBy: Key.self, forKey: Key("peers"))
            for name in ["pytorch", "tinygrad"] {
                if let figure = entry.peers[name] {
                    var p = peerFigures.nestedContainer(keyedBy: Key.self, forKey: Key(name))
                    try p.encode(figure.milliseconds, forKey: Key("median_ms"))
                    try p.encode(figure.opalOverPeer(entry), forKey: Key("opal_over_peer"))
                    try p.encode(figure.note, forKey: Key("note"))
                } else {
                    try peerFigures.encodeNil(forKey: Key(name))
                }
            }
            try e.encode(entry.note, forKey: Key("note"))
        }
    }
}

// MARK: - Running the families

/// Runs the selected entries of a plan on one device, family by family, with the benchmark types the
/// single-family commands use; a family that fails leaves its entries with a note and the suite carries on.
struct SuiteRunner {
    let device: Device
    let plan: SuitePlan
    /// `--runs`, or nil for the family defaults.
    let runs: Int?
    let peak: DevicePeak?
    let progress: (String) -> Void

    var isOpenCL: Bool { device.name.hasPrefix("opencl") }

    func runOpal() -> [SuiteEntry] {
        var entries: [SuiteEntry] = []
        for family in SuitePlan.families {
            let ids = plan.all.filter { $0.family == family && plan.isSelected($0.id) }.map(\.id)
            guard !ids.isEmpty else { continue }
            let started = DispatchTime.now().uptimeNanoseconds
            do {
                entries += try run(family, ids: ids)
            } catch {
                progress("\(family) failed on \(device.name): \(error)")
                entries += ids.map { SuiteEntry(id: $0, family: family, what: family, note: "failed: \(error)") }
            }
            progress("  \(family): \(format(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9, 1)) s")
        }
        return entries
    }

    private func entry(_ id: String, _ family: String, _ what: String, _ time: BenchMeasurement?, flops: Double?,
                       bytes: Double? = nil, reference: SuiteReference? = nil, note: String? = nil) -> SuiteEntry {
        SuiteEntry(id: id, family: family, what: what, opal: time, flops: flops, bytes: bytes, peak: peak,
                   reference: reference, note: note)
    }

    private func run(_ family: String, ids: [String]) throws -> [SuiteEntry] {
        switch family {
        case "K1":
            let sizes = plan.gemmSizes.filter { ids.contains("K1-\($0)") }
            let rows = try GemmBenchmark(sizes: sizes, runs: runs ?? (plan.quick ? 5 : 10)).run(on: device, progress: progress)
            return rows.map { row in
                entry("K1-\(row.size)", family, "SGEMM \(row.size)×\(row.size)×\(row.size)", row.opal, flops: row.flops,
                      bytes: 4 * 3 * Double(row.size * row.size),   // A and B read, C written
                      reference: SuiteReference(name: row.referenceName, time: row.reference))
            }
        case "K2":
            var result: [SuiteEntry] = []
            for (shapeID, shape) in plan.convShapes {
                let passes = SuitePlan.convPasses.filter { ids.contains("K2-\(shapeID)-\($0.id)") }
                guard !passes.isEmpty else { continue }
                let benchmark = ConvBenchmark(shapes: [shape], passes: passes.map(\.pass), runs: runs ?? 5)
                for row in try benchmark.run(on: device, progress: progress) {
                    let passID = passes.first { $0.pass == row.pass }?.id ?? row.pass.rawValue
                    let d = shape.descriptor
                    let what = "conv N\(d.batch) C\(d.inputChannels) \(d.inputHeight)²→\(d.outputChannels) \(d.kernelHeight)×\(d.kernelWidth)\(d.strideHeight > 1 ? " s\(d.strideHeight)" : "") \(row.pass.rawValue)"
                    // Each pass reads two of input, weight and output (or their gradients) and writes the third.
                    let elements = d.batch * d.inputChannels * d.inputHeight * d.inputWidth
                        + d.outputChannels * (d.inputChannels / max(d.groups, 1)) * d.kernelHeight * d.kernelWidth
                        + d.batch * d.outputChannels * d.outputHeight * d.outputWidth
                    result.append(entry("K2-\(shapeID)-\(passID)", family, what, row.opal, flops: row.flops,
                                        bytes: 4 * Double(elements),
                                        reference: both(row.referenceName, row.reference).map { SuiteReference(name: $0.0, time: $0.1) },
                                        note: row.reference == nil ? "\(row.algorithm) is the reference itself on this device" : nil))
                }
            }
            return result
        case "K3":
            var benchmark = AttentionBenchmark(sizes: plan.attentionSizes.filter { ids.contains("K3-N\($0)") }, runs: runs)
            benchmark.peak = peak
            let result = try benchmark.run(on: device, progress: progress)
            return result.rows.map { row in
                entry("K3-N\(row.sequenceLength)", family, "causal attention B8 H8 D64 N\(row.sequenceLength) fwd+bwd",
                      row.fused.time, flops: row.flops,
                      // Forward reads Q, K, V and writes O; backward reads Q, K, V, O, dO and writes dQ, dK, dV.
                      bytes: 4 * 12 * Double(benchmark.batch * benchmark.heads * row.sequenceLength * benchmark.headDimension),
                      reference: row.composed.time.map { SuiteReference(name: "composed ops", time: $0) },
                      note: row.composed.note.map { "composed reference \($0)" })
            }
        case "K4", "K5":
            let cell: RecurrentBenchmark.Cell = family == "K4" ? .lstm : .gru
            let shape = plan.recurrentShape
            let result = try RecurrentBenchmark(cell: cell, shape: shape, runs: runs).run(on: device, progress: progress)
            return [entry(family, family, "\(cell.name) B\(shape.batch) T\(shape.sequenceLength) I\(shape.inputSize) H\(shape.hiddenSize) fwd+bwd",
                          result.fused, flops: result.flops,
                          reference: result.composed.map { SuiteReference(name: "composed cell", time: $0) })]
        case "R3":
            var benchmark = RecurrentStepBenchmark(runs: runs)
            (benchmark.timeBudgetSeconds, benchmark.minimumRuns) = stepBudget
            let result = try benchmark.run(on: device, progress: progress)
            return [entry(family, family, "char-LSTM 65-64-256-65 step, B32 T64", result.step,
                          flops: result.flopsPerStep,
                          reference: result.composedStep.map { SuiteReference(name: "composed cell", time: $0) })]
        default:
            guard let workload = TrainingStepBenchmark.Workload(rawValue: family) else {
                throw ValidationError("no benchmark for family \(family)")
            }
            var benchmark = TrainingStepBenchmark(workload: workload, runs: runs)
            (benchmark.timeBudgetSeconds, benchmark.minimumRuns) = stepBudget
            progress("\(family) step on \(device.name)…")
            let result = try benchmark.run(on: device)
            return [entry(family, family, Self.stepSummary[family] ?? workload.summary, result.step, flops: result.flopsPerStep)]
        }
    }

    static let stepSummary = [
        "R1": "MLP 784-512-512-10 step, B128, Adam",
        "R2": "CNN conv32-conv64-fc128-10 step, B64, Adam",
        "R4": "autoencoder 784-256-32-256-784 step, B128",
        "R5": "DCGAN-small D + G step, B64",
        "R6": "GPT 2×(d128, 4 heads) step, B32 T64, Adam",
    ]

    /// Training steps: as many as fit in 3 s (quick: 1 s), at least 5 (quick: 3), unless `--runs` fixes them.
    private var stepBudget: (seconds: Double, minimumRuns: Int) { plan.quick ? (1, 3) : (3, 5) }

    // MARK: Peers

    /// Runs `peer`'s script for the selected entries it covers and files its figures into `entries`.
    func runPeer(_ peer: PythonPeer, threads: Int, into entries: inout [SuiteEntry]) -> SuitePeerStatus {
        if let missing = peer.availability() {
            printError("\(missing); carrying on with Opal's figures")
            return SuitePeerStatus(status: "missing", note: missing)
        }
        var status = SuitePeerStatus(status: "measured")
        var failures: [String] = []
        for call in peerCalls(peer, threads: threads, ids: Set(entries.map(\.id))) {
            progress("\(call.label) in \(peer.name)…")
            switch peer.run(call.arguments) {
            case .measured(let object):
                for (index, entry) in entries.enumerated() {
                    if let figure = call.figure(object, entry.id) { entries[index].peers[peer.name] = figure }
                }
                if let first = object.values.compactMap({ $0 as? [String: Any] }).first {
                    status.version = status.version ?? (first["torch"] ?? first["tinygrad"]) as? String
                    status.device = status.device ?? first["device"] as? String
                }
            case .missing(let reason), .failed(let reason):
                failures.append("\(call.label): \(reason)")
                for index in entries.indices where call.families.contains(entries[index].family) {
                    entries[index].peers[peer.name] = SuitePeerFigure(milliseconds: nil, note: reason)
                }
            }
        }
        if !failures.isEmpty {
            status.status = "failed"
            status.note = failures.joined(separator: "; ")
        }
        return status
    }

    /// One run of a peer script: its arguments, the families it covers, and how to read an entry's figure.
    struct PeerCall {
        var label: String
        var families: Set<String>
        var arguments: [String]
        var figure: ([String: Any], String) -> SuitePeerFigure?
    }

    /// The runs of `peer`'s script that cover the entries `ids` (one per family, K3 one per sequence length).
    private func peerCalls(_ peer: PythonPeer, threads: Int, ids: Set<String>) -> [PeerCall] {
        let families = Set(plan.all.filter { ids.contains($0.id) }.map(\.family))
        /// `object[key]["median_ms"]`, or the entry's error.
        func median(_ object: [String: Any], _ key: String) -> SuitePeerFigure? {
            guard let entry = object[key] as? [String: Any] else { return nil }
            if let error = entry["error"] as? String { return SuitePeerFigure(milliseconds: nil, note: "\(peer.name) could not run it: \(error)") }
            return (entry["median_ms"] as? Double).map { SuitePeerFigure(milliseconds: $0) }
        }
        let steps = ["R1", "R2", "R3", "R4", "R5", "R6"].filter(families.contains)
        if peer.name == "tinygrad" {
            guard !steps.isEmpty else { return [] }
            let tinygradDevice = isOpenCL ? "CL" : "CPU"
            return [PeerCall(label: steps.joined(separator: ",") + " on tinygrad's \(tinygradDevice) device", families: Set(steps),
                             arguments: ["--device", tinygradDevice, "--workloads", steps.joined(separator: ","), "--warmup", "3",
                                         "--steps", plan.quick ? "5" : "20", "--max-seconds", plan.quick ? "5" : "20",
                                         "--timeout", plan.quick ? "120" : "300"],
                             figure: { object, id in steps.contains(id) ? median(object, id) : nil })]
        }
        var calls: [PeerCall] = []
        let base = ["--device", "cpu", "--threads", "\(threads)"]
        if families.contains("K1") {
            let sizes = plan.gemmSizes.filter { ids.contains("K1-\($0)") }.map(String.init).joined(separator: ",")
            calls.append(PeerCall(label: "K1 torch.mm", families: ["K1"], arguments: base + ["--workloads", "", "--gemm", "--gemm-sizes", sizes]) { object, id in
                guard id.hasPrefix("K1-"), let sizes = (object["gemm"] as? [String: Any])?["sizes"] as? [String: Any],
                      let entry = sizes[String(id.dropFirst(3))] as? [String: Any] else { return nil }
                return (entry["median_ms"] as? Double).map { SuitePeerFigure(milliseconds: $0) }
            })
        }
        if families.contains("K2") {
            let passNames = ["fwd": "forward", "bwd-data": "backward-data", "bwd-weight": "backward-weight"]
            calls.append(PeerCall(label: "K2 conv2d", families: ["K2"],
                                  arguments: base + ["--workloads", "K2", "--warmup", "2", "--steps", plan.quick ? "3" : "5"]
                                      + (plan.quick ? ["--batch", "4"] : [])) { object, id in
                let parts = id.split(separator: "-", maxSplits: 2).map(String.init)
                guard parts.count == 3, parts[0] == "K2", let pass = passNames[parts[2]],
                      let shapes = (object["K2"] as? [String: Any])?["shapes"] as? [String: Any],
                      let passes = (shapes[parts[1]] as? [String: Any])?["passes"] as? [String: Any],
                      let entry = passes[pass] as? [String: Any] else { return nil }
                return (entry["median_ms"] as? Double).map { SuitePeerFigure(milliseconds: $0) }
            })
        }
        if families.contains("K3") {
            for n in plan.attentionSizes where ids.contains("K3-N\(n)") {
                calls.append(PeerCall(label: "K3 N\(n) scaled_dot_product_attention", families: ["K3"],
                                      arguments: base + ["--workloads", "K3", "--seq", "\(n)", "--warmup", "1", "--steps", "3"]) { object, id in
                    id == "K3-N\(n)" ? median(object, "K3") : nil
                })
            }
        }
        let recurrent = ["K4", "K5"].filter(families.contains)
        if !recurrent.isEmpty {
            let shape = plan.recurrentShape
            calls.append(PeerCall(label: recurrent.joined(separator: ",") + " nn.LSTM/nn.GRU", families: Set(recurrent),
                                  arguments: base + ["--workloads", recurrent.joined(separator: ","), "--batch", "\(shape.batch)",
                                                     "--seq", "\(shape.sequenceLength)", "--input-size", "\(shape.inputSize)",
                                                     "--hidden", "\(shape.hiddenSize)", "--warmup", "2", "--steps", "5"]) { object, id in
                recurrent.contains(id) ? median(object, id) : nil
            })
        }
        if !steps.isEmpty {
            calls.append(PeerCall(label: steps.joined(separator: ",") + " training steps", families: Set(steps),
                                  arguments: base + ["--workloads", steps.joined(separator: ","), "--warmup", "5",
                                                     "--steps", plan.quick ? "10" : "30"]) { object, id in
                steps.contains(id) ? median(object, id) : nil
            })
        }
        return calls
    }
}

/// Pairs two optionals: both present, or nil.
private func both<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}
