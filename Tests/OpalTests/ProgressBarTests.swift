import XCTest
@testable import Opal

final class ProgressBarTests: XCTestCase {
    /// Collects what a bar writes and drives its clock.
    private final class Recorder {
        var output = ""
        var now = 1000.0
    }

    private func makeBar(total: Int, isTerminal: Bool, recorder: Recorder) -> ProgressBar {
        ProgressBar(total: total, label: "epoch 1/3", isTerminal: isTerminal,
                    write: { recorder.output += $0 }, clock: { recorder.now })
    }

    func testBarShapes() {
        XCTAssertEqual(ProgressBar.bar(fraction: 0, width: 10), "[>         ]")
        XCTAssertEqual(ProgressBar.bar(fraction: 0.5, width: 10), "[=====>    ]")
        XCTAssertEqual(ProgressBar.bar(fraction: 0.99, width: 10), "[=========>]")
        XCTAssertEqual(ProgressBar.bar(fraction: 1, width: 10), "[==========]")
        XCTAssertEqual(ProgressBar.bar(fraction: 7, width: 3), "[===]")
        XCTAssertEqual(ProgressBar.bar(fraction: -1, width: 3), "[>  ]")
        XCTAssertEqual(ProgressBar.bar(fraction: .nan, width: 3), "[>  ]")
        for width in [1, 7, 33] {
            for step in 0...20 {
                XCTAssertEqual(ProgressBar.bar(fraction: Double(step) / 20, width: width).count, width + 2)
            }
        }
    }

    func testDurationAndMetricFormats() {
        XCTAssertEqual(ProgressBar.formatDuration(0), "0:00")
        XCTAssertEqual(ProgressBar.formatDuration(42.4), "0:42")
        XCTAssertEqual(ProgressBar.formatDuration(59.6), "1:00")
        XCTAssertEqual(ProgressBar.formatDuration(3599), "59:59")
        XCTAssertEqual(ProgressBar.formatDuration(3723), "1:02:03")
        XCTAssertEqual(ProgressBar.formatDuration(nil), "--:--")
        XCTAssertEqual(ProgressBar.formatDuration(.infinity), "--:--")
        XCTAssertEqual(ProgressBar.formatDuration(-3), "--:--")
        XCTAssertEqual(ProgressBar.formatMetric(0.43214), "0.4321")
        XCTAssertEqual(ProgressBar.formatMetric(0), "0.0000")
        XCTAssertEqual(ProgressBar.formatMetric(2.5e-5), "2.500e-05")
        XCTAssertEqual(ProgressBar.formatMetric(.nan), "nan")
    }

    func testLineLayout() {
        let line = ProgressBar.line(label: "", completed: 12, total: 469, metrics: [("loss", 0.43214)],
                                    samplesPerSecond: 5231.4, eta: 42, width: 10)
        XCTAssertEqual(line, "[>         ] 12/469 loss 0.4321 · 5231 samples/s · ETA 0:42")
        let done = ProgressBar.line(label: "eval", completed: 5, total: 5, metrics: [], samplesPerSecond: nil,
                                    eta: nil, width: 4)
        XCTAssertEqual(done, "eval [====] 5/5")
    }

    func testTerminalRedrawsInPlaceAtMostTenTimesASecond() {
        let recorder = Recorder()
        let bar = makeBar(total: 469, isTerminal: true, recorder: recorder)
        for step in 1...100 {  // 100 updates 10 ms apart: one second
            recorder.now += 0.01
            bar.update(completed: step, metrics: ["loss": 1 / Double(step)], samples: 128)
        }
        let draws = recorder.output.components(separatedBy: "\r").count - 1
        XCTAssert((9...11).contains(draws), "\(draws) redraws in one second")
        XCTAssertFalse(recorder.output.contains("\n"))
        XCTAssert(recorder.output.hasSuffix("\u{1B}[K"))
        // 100 steps of 128 samples in 1 s: 12,800 samples/s; 369 steps left at 10 ms each: ETA 0:04.
        bar.update(completed: 100, metrics: ["loss": 0.5], samples: 0)
        recorder.now += 0.2
        bar.update(completed: 100, metrics: ["loss": 0.5], samples: 0)
        XCTAssert(recorder.output.hasSuffix("100/469 loss 0.5000 · 10667 samples/s · ETA 0:04\u{1B}[K"), recorder.output)
        bar.update(completed: 469, metrics: ["loss": 0.25])  // the last step is always drawn
        XCTAssert(recorder.output.contains("[====================] 469/469 loss 0.2500"))
        bar.finish()
        XCTAssert(recorder.output.hasSuffix(" · done in 0:01\u{1B}[K\n"), recorder.output)
        let length = recorder.output.count
        bar.finish()
        bar.update(completed: 1)
        XCTAssertEqual(recorder.output.count, length, "nothing is written after finish()")
    }

    func testNonTerminalPrintsOneLinePerTenPercent() {
        let recorder = Recorder()
        let total = 1 + Int.random(in: 0..<1000)
        let bar = makeBar(total: total, isTerminal: false, recorder: recorder)
        for step in 1...total {
            recorder.now += 0.001
            bar.update(completed: step, metrics: [("loss", 0.1), ("accuracy", 0.9)], samples: 64)
        }
        bar.finish()
        let lines = recorder.output.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.last, "")
        XCTAssertFalse(recorder.output.contains("\r"))
        // One line per tenth reached before the end (10 %, …, 90 %; fewer when total < 10), then finish()'s.
        XCTAssertEqual(lines.count - 1, min(total, 10), "total \(total):\n\(recorder.output)")
        XCTAssert(lines.allSatisfy { $0.isEmpty || $0.hasPrefix("epoch 1/3 [") })
        XCTAssert(lines[lines.count - 2].contains("\(total)/\(total) loss 0.1000 accuracy 0.9000"))
        XCTAssert(lines[lines.count - 2].contains("done in"))
    }
}
