import OpalCore
import OpalCPU
import OpalOpenCL
import XCTest

/// Kernels/reduce.cl against CPUBackend: sum, max and argmax over every [outer, size, inner] layout kind.
final class ReduceKernelTests: KernelTestCase {
    /// Rows (inner 1: few rows take the work-group tree, many rows one work-item each on CPU devices),
    /// columns (inner > 1), a single row, a single column and size 1.
    var layouts: [ReduceLayout] {
        small
            ? [ReduceLayout(outer: 1, size: 33, inner: 1), ReduceLayout(outer: 7, size: 5, inner: 1),
               ReduceLayout(outer: 67, size: 9, inner: 1),
               ReduceLayout(outer: 3, size: 7, inner: 5), ReduceLayout(outer: 1, size: 9, inner: 33),
               ReduceLayout(outer: 6, size: 1, inner: 4), ReduceLayout(outer: 1, size: 1, inner: 1)]
            : [ReduceLayout(outer: 1, size: 4097, inner: 1), ReduceLayout(outer: 33, size: 1000, inner: 1),
               ReduceLayout(outer: 7, size: 3, inner: 1), ReduceLayout(outer: 130, size: 197, inner: 1),
               ReduceLayout(outer: 3, size: 7, inner: 33),
               ReduceLayout(outer: 1, size: 1000, inner: 7), ReduceLayout(outer: 17, size: 1, inner: 9),
               ReduceLayout(outer: 1, size: 1, inner: 1)]
    }

    func testSumAndMaxMatchCPU() throws {
        for layout in layouts {
            let x = try pair(uniform(layout.outer * layout.size * layout.inner, in: -1...1))
            for op in [ReduceOp.sum, .max] {
                let y = try poisonedPair(layout.outer * layout.inner)
                try gpu.reduce(op, x.gpu, y.gpu, layout: layout)
                try cpu.reduce(op, x.cpu, y.cpu, layout: layout)
                let result = try read(y, count: layout.outer * layout.inner)
                // A sum of `size` terms in [−1, 1] may cancel: judge its error against √size.
                assertClose(result.gpu, result.cpu, tolerance: 1e-5,
                            floor: op == .sum ? Float(layout.size).squareRoot() : 1, "\(op) over \(layout)")
            }
        }
    }

    func testArgmaxMatchesCPU() throws {
        for layout in layouts {
            let count = layout.outer * layout.size * layout.inner
            let x = try pair(uniform(count))
            let y = try poisonedPair(layout.outer * layout.inner)
            try gpu.argmax(x.gpu, y.gpu, layout: layout)
            try cpu.argmax(x.cpu, y.cpu, layout: layout)
            XCTAssertEqual(try gpu.readInts(y.gpu, count: layout.outer * layout.inner),
                           try cpu.readInts(y.cpu, count: layout.outer * layout.inner), context("argmax over \(layout)"))
        }
    }

    /// Ties go to the first index, whichever work-item saw them.
    func testArgmaxTiesPickTheFirstIndex() throws {
        let size = small ? 40 : 1000
        for layout in [ReduceLayout(outer: 2, size: size, inner: 1), ReduceLayout(outer: 2, size: size, inner: 3)] {
            var values = [Float](repeating: 0, count: layout.outer * size * layout.inner)
            let first = Int.random(in: 0..<(size / 2), using: &random)
            for o in 0..<layout.outer {
                for i in 0..<layout.inner {
                    for s in [first, first + 1, size - 1] { values[(o * size + s) * layout.inner + i] = 5 }
                }
            }
            let x = try pair(values)
            let y = try poisonedPair(layout.outer * layout.inner)
            try gpu.argmax(x.gpu, y.gpu, layout: layout)
            XCTAssertEqual(try gpu.readInts(y.gpu, count: layout.outer * layout.inner),
                           [Int32](repeating: Int32(first), count: layout.outer * layout.inner),
                           context("argmax ties over \(layout)"))
        }
    }
}
