import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A one-line progress display on standard error for training and evaluation loops:
///
///     epoch 1/5 [=====>              ] 12/469 loss 0.4321 · 5231 samples/s · ETA 0:42
///
/// On a terminal the line is redrawn in place (`\r`) at most 10 times a second. When standard error is
/// not a terminal (CI logs, files) it prints a plain line each time another 10 % is done, so logs stay
/// short and readable (`finish()` prints the last line). Use it from one thread.
public final class ProgressBar {
    /// Number of steps in the whole run.
    public let total: Int
    /// Printed before the bar, e.g. "epoch 1/5".
    public let label: String
    /// Characters between the brackets.
    public var width = 20

    private let isTerminal: Bool
    private let write: (String) -> Void
    private let clock: () -> Double
    private let startTime: Double
    private var lastDrawTime = -Double.infinity
    private var nextReportedDecile = 1
    private var completed = 0
    private var samples = 0
    private var metrics: [(String, Double)] = []
    private var lastLineLength = 0
    private var isFinished = false

    /// A bar that writes to standard error; it redraws in place only when standard error is a terminal.
    public convenience init(total: Int, label: String = "") {
        self.init(total: total, label: label, isTerminal: isatty(STDERR_FILENO) == 1,
                  write: { FileHandle.standardError.write(Data($0.utf8)) },
                  clock: { ProcessInfo.processInfo.systemUptime })
    }

    /// A bar with an explicit output and clock (for tests and custom sinks).
    public init(total: Int, label: String, isTerminal: Bool, write: @escaping (String) -> Void,
                clock: @escaping () -> Double) {
        self.total = max(0, total)
        self.label = label
        self.isTerminal = isTerminal
        self.write = write
        self.clock = clock
        self.startTime = clock()
    }

    /// Records progress. `completed` is the number of steps done so far (0…total); `samples` is how many
    /// examples were processed since the previous update (it feeds the samples/s figure); `metrics`
    /// are shown in order with 4 significant decimals, e.g. `["loss": 0.4321]`.
    public func update(completed: Int, metrics: KeyValuePairs<String, Double> = [:], samples: Int = 0) {
        update(completed: completed, metrics: metrics.map { ($0.key, $0.value) }, samples: samples)
    }

    /// Same as `update(completed:metrics:samples:)` with metrics as an array of pairs.
    public func update(completed: Int, metrics: [(String, Double)], samples: Int = 0) {
        guard !isFinished else { return }
        self.completed = min(max(0, completed), total)
        self.samples += max(0, samples)
        self.metrics = metrics
        let now = clock()
        if isTerminal {
            if now - lastDrawTime >= 0.1 || self.completed == total {
                redraw(now: now)
            }
        } else if total > 0 && self.completed < total {
            // One line per tenth; the 100 % line comes from finish().
            let decile = self.completed * 10 / total
            if decile >= nextReportedDecile {
                nextReportedDecile = decile + 1
                write(Self.line(label: label, completed: self.completed, total: total, metrics: metrics,
                                samplesPerSecond: rate(now: now), eta: eta(now: now), width: width) + "\n")
            }
        }
    }

    /// Ends the bar: prints its final state and the elapsed time, and moves to a new line.
    /// Calling it again does nothing.
    public func finish() {
        guard !isFinished else { return }
        isFinished = true
        let now = clock()
        let text = Self.line(label: label, completed: completed, total: total, metrics: metrics,
                             samplesPerSecond: rate(now: now), eta: nil, width: width)
            + " · done in " + Self.formatDuration(now - startTime)
        if isTerminal {
            write("\r" + text + "\u{1B}[K\n")
        } else {
            write(text + "\n")
        }
    }

    deinit {
        // A bar left half-drawn on a terminal would swallow the next line of output.
        if isTerminal && !isFinished && lastLineLength > 0 { write("\n") }
    }

    private func redraw(now: Double) {
        lastDrawTime = now
        let text = Self.line(label: label, completed: completed, total: total, metrics: metrics,
                             samplesPerSecond: rate(now: now), eta: eta(now: now), width: width)
        lastLineLength = text.count
        write("\r" + text + "\u{1B}[K")
    }

    private func rate(now: Double) -> Double? {
        let elapsed = now - startTime
        guard samples > 0, elapsed > 0 else { return nil }
        return Double(samples) / elapsed
    }

    private func eta(now: Double) -> Double? {
        guard completed > 0 else { return nil }
        let elapsed = now - startTime
        return elapsed / Double(completed) * Double(total - completed)
    }

    // MARK: Pure formatting helpers

    /// `[=====>    ]`: `width` characters between brackets, `fraction` (clamped to 0…1) of them filled,
    /// with `>` marking the head until the bar is full.
    public static func bar(fraction: Double, width: Int) -> String {
        let width = max(1, width)
        let clamped = fraction.isNaN ? 0 : min(1, max(0, fraction))
        let filled = Int((clamped * Double(width)).rounded(.down))
        if filled >= width { return "[" + String(repeating: "=", count: width) + "]" }
        return "[" + String(repeating: "=", count: filled) + ">"
            + String(repeating: " ", count: width - filled - 1) + "]"
    }

    /// `m:ss` below an hour, `h:mm:ss` above, `--:--` when unknown (nil, negative or not finite).
    public static func formatDuration(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite, seconds >= 0 else { return "--:--" }
        let whole = Int(seconds.rounded())
        let (hours, minutes, secs) = (whole / 3600, whole / 60 % 60, whole % 60)
        let twoDigits = { (value: Int) in value < 10 ? "0\(value)" : "\(value)" }
        return hours > 0 ? "\(hours):\(twoDigits(minutes)):\(twoDigits(secs))" : "\(minutes):\(twoDigits(secs))"
    }

    /// A metric value: 4 decimals in the usual range, scientific notation for very small or large values.
    public static func formatMetric(_ value: Double) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
        let magnitude = abs(value)
        if magnitude == 0 || (magnitude >= 1e-3 && magnitude < 1e5) {
            return String(format: "%.4f", value)
        }
        return String(format: "%.3e", value)
    }

    /// The whole line: `label [bar] completed/total name value … · N samples/s · ETA m:ss`.
    public static func line(label: String, completed: Int, total: Int, metrics: [(String, Double)],
                            samplesPerSecond: Double?, eta: Double?, width: Int = 20) -> String {
        var parts: [String] = []
        if !label.isEmpty { parts.append(label) }
        let fraction = total > 0 ? Double(completed) / Double(total) : 1
        parts.append(bar(fraction: fraction, width: width))
        parts.append("\(completed)/\(total)")
        for (name, value) in metrics { parts.append("\(name) \(formatMetric(value))") }
        var text = parts.joined(separator: " ")
        if let samplesPerSecond, samplesPerSecond.isFinite {
            text += " · \(Int(samplesPerSecond.rounded())) samples/s"
        }
        if completed < total {
            text += " · ETA " + formatDuration(eta)
        }
        return text
    }
}
