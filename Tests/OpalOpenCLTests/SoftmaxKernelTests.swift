import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/softmax.cl against CPUBackend: softmax and log-softmax rows, forward and backward.
final class SoftmaxKernelTests: KernelTestCase {
    var shapes: [(rows: Int, columns: Int)] {
        small ? [(1, 1), (7, 33), (3, 64), (2, 5)] : [(1, 1), (7, 33), (33, 1000), (3, 4097), (100, 10)]
    }

    func testForwardMatchesCPU() throws {
        for (rows, columns) in shapes {
            let x = try pair(uniform(rows * columns, in: -8...8))
            for log in [false, true] {
                let y = try poisonedPair(rows * columns)
                try gpu.softmax(x.gpu, y.gpu, rows: rows, columns: columns, log: log)
                try cpu.softmax(x.cpu, y.cpu, rows: rows, columns: columns, log: log)
                let result = try read(y, count: rows * columns)
                assertClose(result.gpu, result.cpu, tolerance: 1e-5, floor: log ? 1 : 1e-6,
                            "\(log ? "log-" : "")softmax \(rows)×\(columns)")
                if !log {
                    for row in 0..<rows {
                        let sum = result.gpu[(row * columns)..<((row + 1) * columns)].reduce(0, +)
                        XCTAssertEqual(sum, 1, accuracy: 1e-4, context("row \(row) of softmax sums to 1"))
                    }
                }
            }
        }
    }

    func testInPlaceForward() throws {
        let rows = 5, columns = small ? 20 : 300
        let values = uniform(rows * columns)
        let x = try pair(values), expected = try poisonedPair(rows * columns)
        try gpu.softmax(x.gpu, x.gpu, rows: rows, columns: columns, log: false)
        try cpu.softmax(x.cpu, expected.cpu, rows: rows, columns: columns, log: false)
        assertClose(try gpu.readFloats(x.gpu, count: rows * columns),
                    try cpu.readFloats(expected.cpu, count: rows * columns), tolerance: 1e-5, floor: 1e-6,
                    "in-place softmax")
    }

    func testBackwardMatchesCPU() throws {
        for (rows, columns) in shapes {
            let x = try pair(uniform(rows * columns, in: -4...4))
            let dy = try pair(uniform(rows * columns))
            for log in [false, true] {
                let y = try poisonedPair(rows * columns)
                try cpu.softmax(x.cpu, y.cpu, rows: rows, columns: columns, log: log)
                let forward = try pair(try cpu.readFloats(y.cpu, count: rows * columns))
                let dx = try poisonedPair(rows * columns)
                try gpu.softmaxBackward(forward.gpu, dy.gpu, dx.gpu, rows: rows, columns: columns, log: log)
                try cpu.softmaxBackward(forward.cpu, dy.cpu, dx.cpu, rows: rows, columns: columns, log: log)
                let result = try read(dx, count: rows * columns)
                assertClose(result.gpu, result.cpu, tolerance: 1e-4, floor: log ? 1 : 1e-3,
                            "\(log ? "log-" : "")softmax backward \(rows)×\(columns)")
            }
        }
    }
}
