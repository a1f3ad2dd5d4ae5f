import ArgumentParser
import Foundation
import Opal
import OpalBenchmarks
import OpalOpenCL
import OpenCLKit

/// `opal bench tune gemm|conv|attention|recurrent|all`: searches the kernels' tile and work-group parameters on
/// one OpenCL device and stores the winners in the device's file beside the program cache
/// (`$OPAL_CACHE_DIR/tuning`, default `~/.cache/opal/tuning`); every later run on that device uses them.
/// `opal bench --tune FAMILY` forwards here.
struct BenchTuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "Tune the kernels' tile and work-group parameters for an OpenCL device and store the winners.",
        discussion: """
            Each candidate is checked against the built-in parameters on a small awkward case (else rejected), then \
            timed on the family's shapes (median of several runs); the fastest is confirmed against the built-in \
            parameters once more, alternating, and kept only if at least 2 % faster. The winners go to \
            $OPAL_CACHE_DIR/tuning/<device>.json (default ~/.cache/opal/tuning); later runs use them unless \
            OPAL_GEMM_PARAMETERS / OPAL_ATTENTION_PARAMETERS override them. --reset forgets them. \
            `opal devices` shows what is tuned.
            """)

    enum Family: String, ExpressibleByArgument, CaseIterable {
        case gemm, conv, attention, recurrent, all
        var families: [KernelFamily] {
            self == .all ? KernelFamily.allCases : [KernelFamily(rawValue: rawValue)!]
        }
    }

    @Argument(help: ArgumentHelp("The kernel family: gemm, conv, attention, recurrent, or all.", valueName: "family"))
    var family: Family

    @Option(name: .long, help: ArgumentHelp(
        "The OpenCL device to tune: opencl:N, gpu, or auto (the best GPU, else the first OpenCL device). "
            + "Default: $OPAL_DEVICE or auto.", valueName: "device"))
    var device: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Flag(help: "Forget the tuned parameters of the family (all: delete the device's file) instead of tuning.")
    var reset = false

    @Flag(help: .hidden)
    var quick = false

    func validate() throws {
        let text = requestText
        let request: DeviceRequest
        do { request = try DeviceRequest(parsing: text) } catch { throw ValidationError("--device: \(error)") }
        if request == .cpu {
            throw ValidationError("--device cpu is the native CPU backend, which has no kernel parameters to tune; "
                                  + "name an OpenCL device (opencl:N, see `opal devices`)")
        }
    }

    private var requestText: String { device ?? ProcessInfo.processInfo.environment["OPAL_DEVICE"] ?? "auto" }

    /// The OpenCL device the request names, and its index.
    private func target() throws -> OpenCLDeviceInfo {
        let devices = DeviceRegistry.shared.openCL
        let request = try DeviceRequest(parsing: requestText)
        switch request {
        case let .openCL(index):
            guard let info = devices.first(where: { $0.index == index }) else {
                throw ValidationError("--device opencl:\(index): no such OpenCL device (\(devices.count) found; "
                                      + "see `opal devices`)")
            }
            return info
        case .gpu, .automatic:
            let gpus = devices.filter { $0.device.type == .gpu }
            if let best = gpus.max(by: { $0.score < $1.score }) { return best }
            if request == .gpu { throw ValidationError("--device gpu: no OpenCL GPU found (see `opal devices`)") }
            guard let first = devices.first else {
                throw ValidationError("no OpenCL device to tune: "
                                      + (DeviceRegistry.shared.discoveryMessage ?? "none found"))
            }
            return first
        case .cpu:
            throw ValidationError("--device cpu has no kernel parameters to tune")
        }
    }

    func run() throws {
        let info = try target()
        let clDevice = info.device
        let store = TuningStore()
        guard let file = store.file(for: clDevice) else { throw ValidationError("\(TuningStoreError.noDirectory)") }
        let path = file.path(percentEncoded: false)
        let name = "opencl:\(info.index)"

        if reset {
            try resetTuning(store: store, device: clDevice, name: name, path: path)
            return
        }

        printError("tuning \(name): \(clDevice.name) (\(clDevice.platformName), driver \(clDevice.driverVersion))")
        let tuner = KernelTuner(device: clDevice, index: info.index, quick: quick)
        var rows: [Row] = []
        for kernelFamily in family.families {
            do {
                let outcome = try tuner.tune(kernelFamily) { printError($0) }
                // Read again before each write: a family tuned meanwhile (another process) is kept.
                var record = store.record(for: clDevice) ?? TuningRecord(for: clDevice)
                record[kernelFamily] = outcome
                try store.save(record, for: clDevice)
                rows.append(Row(family: kernelFamily.rawValue, outcome: outcome, skipped: nil))
            } catch let error as TunerError {
                if case .nothingToTune = error, family == .all {
                    printError("\(kernelFamily.rawValue): skipped: \(error)")
                    rows.append(Row(family: kernelFamily.rawValue, outcome: nil, skipped: "\(error)"))
                    continue
                }
                throw ValidationError("\(error)")
            }
        }
        let tuned = rows.contains { $0.outcome != nil }
        if json {
            let report = Report(device: name, deviceName: clDevice.name, file: tuned ? path : nil, quick: quick,
                                families: rows)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("kernel tuning on \(name): \(clDevice.name)\(quick ? " (quick grid)" : "")")
        let header = ["family", "candidates", "rejected", "default ms", "tuned ms", "improvement", "winner"]
        var table = [header]
        for row in rows {
            guard let outcome = row.outcome else {
                table.append([row.family, "-", "-", "-", "-", "-", "skipped: \(row.skipped ?? "")"])
                continue
            }
            table.append([row.family, "\(outcome.candidates)", "\(outcome.rejected)",
                          Self.milliseconds(outcome.defaultMilliseconds), Self.milliseconds(outcome.tunedMilliseconds),
                          String(format: "%+.1f%%", outcome.improvementPercent),
                          outcome.parameters == nil ? "built-in kept" : outcome.description])
        }
        let widths = (0..<header.count).map { column in table.map { $0[column].count }.max() ?? 0 }
        for line in table {
            print(line.enumerated().map { column, cell in
                column == line.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  "))
        }
        for row in rows { if let outcome = row.outcome { print("  \(row.family) shapes: \(outcome.shapes.joined(separator: "; "))") } }
        print("improvement = default time / tuned time − 1 (times: sum over the shapes of the median)")
        if tuned { print("written: \(path)") }
    }

    private func resetTuning(store: TuningStore, device: CLDevice, name: String, path: String) throws {
        if family == .all {
            let removed = try store.reset(for: device)
            print(removed ? "\(name): removed \(path); the built-in parameters apply"
                          : "\(name): not tuned (no \(path))")
            return
        }
        guard var record = store.record(for: device), record[family.families[0]] != nil else {
            print("\(name): \(family.rawValue) is not tuned")
            return
        }
        record[family.families[0]] = nil
        if record.families.isEmpty { try store.reset(for: device) } else { try store.save(record, for: device) }
        print("\(name): forgot the tuned \(family.rawValue) parameters in \(path); the built-in ones apply")
    }

    static func milliseconds(_ value: Double) -> String {
        value < 10 ? String(format: "%.3f", value) : String(format: "%.1f", value)
    }

    struct Row: Encodable {
        var family: String
        var outcome: TunedFamily?
        var skipped: String?

        enum CodingKeys: String, CodingKey {
            case family, skipped, parameters, description, defaultMilliseconds, tunedMilliseconds, improvementPercent
            case candidates, rejected, shapes, date
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(family, forKey: .family)
            try container.encodeIfPresent(skipped, forKey: .skipped)
            guard let outcome else { return }
            try container.encodeIfPresent(outcome.parameters, forKey: .parameters)
            try container.encode(outcome.description, forKey: .description)
            try container.encode(outcome.defaultMilliseconds, forKey: .defaultMilliseconds)
            try container.encode(outcome.tunedMilliseconds, forKey: .tunedMilliseconds)
            try container.encode(outcome.improvementPercent, forKey: .improvementPercent)
            try container.encode(outcome.candidates, forKey: .candidates)
            try container.encode(outcome.rejected, forKey: .rejected)
            try container.encode(outcome.shapes, forKey: .shapes)
            try container.encode(outcome.date, forKey: .date)
        }
    }

    struct Report: Encodable {
        var device: String
        var deviceName: String
        var file: String?
        var quick: Bool
        var families: [Row]
    }
}
