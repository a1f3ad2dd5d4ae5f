import Foundation
import OpalCore
import XCTest
@testable import OpalCPU

/// Max pooling of one NCHW tensor in Double: the values and the flat in-plane index of the first maximum.
func referenceMaxPool(_ x: [Double], _ d: Pool2DDescriptor) -> (values: [Double], indices: [Int32]) {
    var values: [Double] = [], indices: [Int32] = []
    for plane in 0..<(d.batch * d.channels) {
        for oh in 0..<d.outputHeight {
            for ow in 0..<d.outputWidth {
                var best = -Double.infinity, bestIndex = -1
                for kh in 0..<d.kernelHeight {
                    for kw in 0..<d.kernelWidth {
                        let ih = oh * d.strideHeight - d.paddingHeight + kh
                        let iw = ow * d.strideWidth - d.paddingWidth + kw
                        guard ih >= 0, ih < d.inputHeight, iw >= 0, iw < d.inputWidth else { continue }
                        let value = x[(plane * d.inputHeight + ih) * d.inputWidth + iw]
                        if bestIndex < 0 || value > best { best = value; bestIndex = ih * d.inputWidth + iw }
                    }
                }
                values.append(best)
                indices.append(Int32(bestIndex))
            }
        }
    }
    return (values, indices)
}

/// Average pooling in Double, padded positions counting as zeros (divisor kH·kW).
func referenceAvgPool(_ x: [Double], _ d: Pool2DDescriptor) -> [Double] {
    var values: [Double] = []
    for plane in 0..<(d.batch * d.channels) {
        for oh in 0..<d.outputHeight {
            for ow in 0..<d.outputWidth {
                var sum = 0.0
                for kh in 0..<d.kernelHeight {
                    for kw in 0..<d.kernelWidth {
                        let ih = oh * d.strideHeight - d.paddingHeight + kh
                        let iw = ow * d.strideWidth - d.paddingWidth + kw
                        guard ih >= 0, ih < d.inputHeight, iw >= 0, iw < d.inputWidth else { continue }
                        sum += x[(plane * d.inputHeight + ih) * d.inputWidth + iw]
                    }
                }
                values.append(sum / Double(d.kernelHeight * d.kernelWidth))
            }
        }
    }
    return values
}

/// Pooling geometries: odd sizes, kernel 2/3, stride 1/2/3, padding 0/1, batch 1 and 3.
func poolDescriptors(small: Bool) -> [Pool2DDescriptor] {
    var result: [Pool2DDescriptor] = []
    let sizes = small ? [(5, 7), (1, 3)] : [(7, 9), (1, 3), (13, 6), (33, 17)]
    for batch in [1, 3] {
        for (height, width) in sizes {
            for kernel in [2, 3] {
                for stride in [1, 2, 3] {
                    for padding in [0, 1] {
                        let d = Pool2DDescriptor(batch: batch, channels: 2, inputHeight: height, inputWidth: width,
                                                 kernelHeight: kernel, kernelWidth: kernel == 2 ? 3 : 2,
                                                 strideHeight: stride, strideWidth: stride == 1 ? 2 : stride,
                                                 paddingHeight: padding, paddingWidth: padding)
                        if d.problem == nil { result.append(d) }
                    }
                }
            }
        }
    }
    // A square, non-overlapping window (the common 2×2/2 case).
    result.append(Pool2DDescriptor(batch: 2, channels: 3, inputHeight: 8, inputWidth: 8, kernelHeight: 2,
                                   kernelWidth: 2, strideHeight: 2, strideWidth: 2))
    return result
}

extension Pool2DDescriptor {
    var summary: String {
        "pool N\(batch) C\(channels) \(inputHeight)×\(inputWidth) k\(kernelHeight)×\(kernelWidth) "
            + "s\(strideHeight)×\(strideWidth) p\(paddingHeight)×\(paddingWidth)"
    }
}

final class PoolTests: CPUTestCase {
    let descriptors = poolDescriptors(small: false)

    func testMaxPoolMatchesDoubleReference() throws {
        for d in descriptors {
            let x = uniform(d.inputCount)
            let y = try poisoned(d.outputCount), indices = try poisoned(d.outputCount)
            try backend.maxPool2D(try buffer(x), y, indices, descriptor: d)
            let expected = referenceMaxPool(x.map(Double.init), d)
            XCTAssertEqual(try read(y), expected.values.map(Float.init), context("max pool values \(d.summary)"))
            XCTAssertEqual(try backend.readInts(indices, count: d.outputCount), expected.indices,
                           context("max pool indices \(d.summary)"))
        }
    }

    /// Inputs drawn from {0, 1, 2} tie in almost every window: the first maximum (row-major) must win,
    /// and an all-negative window next to padding must not pick the padding.
    func testMaxPoolTiesPickTheFirstIndex() throws {
        for d in descriptors {
            let x = (0..<d.inputCount).map { _ in Float(Int.random(in: 0...2, using: &random)) - 3 }
            let y = try poisoned(d.outputCount), indices = try poisoned(d.outputCount)
            try backend.maxPool2D(try buffer(x), y, indices, descriptor: d)
            let expected = referenceMaxPool(x.map(Double.init), d)
            XCTAssertEqual(try read(y), expected.values.map(Float.init), context("tied values \(d.summary)"))
            XCTAssertEqual(try backend.readInts(indices, count: d.outputCount), expected.indices,
                           context("tied indices \(d.summary)"))
        }
    }

    func testMaxPoolHandComputed() throws {
        // 1×1×3×3, kernel 2, stride 1: windows {1, 5, 4, 5} → 5 at 1, {5, 2, 5, 0} → 5 at 1, {4, 5, 7, 3} → 7 at 6,
        // {5, 0, 3, 3} → 5 at 4.
        let d = Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 3, inputWidth: 3, kernelHeight: 2,
                                 kernelWidth: 2, strideHeight: 1, strideWidth: 1)
        let y = try poisoned(4), indices = try poisoned(4)
        try backend.maxPool2D(try buffer([1, 5, 2, 4, 5, 0, 7, 3, 3]), y, indices, descriptor: d)
        XCTAssertEqual(try read(y), [5, 5, 7, 5])
        XCTAssertEqual(try backend.readInts(indices, count: 4), [1, 1, 6, 4])
        let dx = try poisoned(9)
        try backend.maxPool2DBackward(try buffer([1, 10, 100, 1000]), indices, dx, descriptor: d)
        XCTAssertEqual(try read(dx), [0, 11, 0, 0, 1000, 0, 100, 0, 0])
    }

    func testMaxPoolPropagatesNaN() throws {
        let d = Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 2, inputWidth: 3, kernelHeight: 2,
                                 kernelWidth: 2, strideHeight: 1, strideWidth: 1)
        let y = try poisoned(2), indices = try poisoned(2)
        try backend.maxPool2D(try buffer([1, .nan, 2, 3, 9, .nan]), y, indices, descriptor: d)
        XCTAssertTrue(try read(y).allSatisfy(\.isNaN))
        XCTAssertEqual(try backend.readInts(indices, count: 2), [1, 1])
        // One 1×4 window: an infinity is an ordinary maximum; a NaN after it still wins, the first NaN.
        let row = Pool2DDescriptor(batch: 1, channels: 2, inputHeight: 1, inputWidth: 4, kernelHeight: 1,
                                   kernelWidth: 4, strideHeight: 1, strideWidth: 1)
        let rowOutput = try poisoned(2), rowIndices = try poisoned(2)
        try backend.maxPool2D(try buffer([-.infinity, .infinity, 3, .infinity, .infinity, 2, .nan, .nan]), rowOutput,
                              rowIndices, descriptor: row)
        let values = try read(rowOutput)
        XCTAssertEqual(values[0], .infinity)
        XCTAssertTrue(values[1].isNaN)
        XCTAssertEqual(try backend.readInts(rowIndices, count: 2), [1, 2])
    }

    func testAvgPoolMatchesDoubleReference() throws {
        for d in descriptors {
            let x = uniform(d.inputCount)
            let y = try poisoned(d.outputCount)
            try backend.avgPool2D(try buffer(x), y, descriptor: d)
            assertClose(try read(y), referenceAvgPool(x.map(Double.init), d), relative: 1e-6, absolute: 1e-6,
                        "avg pool \(d.summary)")
        }
    }

    /// dx of max pooling against central differences of L(x) = Σ dy·maxPool(x) in Double. The inputs are
    /// distinct multiples of 0.01, so a step of 1e-3 never changes which element is the maximum.
    func testMaxPoolBackwardMatchesFiniteDifferences() throws {
        for d in descriptors where d.inputCount <= 400 {
            let x = (0..<d.inputCount).map { Float($0) * 0.01 - 1 }.shuffled(using: &random)
            let dy = uniform(d.outputCount)
            let y = try poisoned(d.outputCount), indices = try poisoned(d.outputCount)
            try backend.maxPool2D(try buffer(x), y, indices, descriptor: d)
            let dx = try poisoned(d.inputCount)
            try backend.maxPool2DBackward(try buffer(dy), indices, dx, descriptor: d)
            let numeric = finiteDifferences(x.map(Double.init), step: 1e-3) { values in
                zip(referenceMaxPool(values, d).values, dy).reduce(0) { $0 + $1.0 * Double($1.1) }
            }
            assertClose(try read(dx), numeric, relative: 1e-5, absolute: 1e-6, "max pool backward \(d.summary)")
        }
    }

    func testAvgPoolBackwardMatchesFiniteDifferences() throws {
        for d in descriptors where d.inputCount <= 400 {
            let x = uniform(d.inputCount), dy = uniform(d.outputCount)
            let dx = try poisoned(d.inputCount)
            try backend.avgPool2DBackward(try buffer(dy), dx, descriptor: d)
            let numeric = finiteDifferences(x.map(Double.init), step: 1e-2) { values in
                zip(referenceAvgPool(values, d), dy).reduce(0) { $0 + $1.0 * Double($1.1) }
            }
            assertClose(try read(dx), numeric, relative: 1e-5, absolute: 1e-6, "avg pool backward \(d.summary)")
        }
    }

    func testInvalidGeometryThrows() throws {
        let bad = [
            Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 4, inputWidth: 4, kernelHeight: 2, kernelWidth: 2,
                             strideHeight: 0, strideWidth: 1),
            Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 4, inputWidth: 4, kernelHeight: 2, kernelWidth: 2,
                             strideHeight: 1, strideWidth: 1, paddingHeight: 2),
            Pool2DDescriptor(batch: 1, channels: 1, inputHeight: 1, inputWidth: 4, kernelHeight: 3, kernelWidth: 2,
                             strideHeight: 1, strideWidth: 1),
        ]
        let buffer = try poisoned(64)
        for d in bad {
            XCTAssertThrowsError(try backend.maxPool2D(buffer, buffer, buffer, descriptor: d), d.summary)
            XCTAssertThrowsError(try backend.avgPool2DBackward(buffer, buffer, descriptor: d), d.summary)
        }
        let d = Pool2DDescriptor(batch: 2, channels: 3, inputHeight: 8, inputWidth: 8, kernelHeight: 2,
                                 kernelWidth: 2, strideHeight: 2, strideWidth: 2)
        XCTAssertThrowsError(try backend.avgPool2D(buffer, buffer, descriptor: d), "input buffer too small")
    }
}

/// Central differences ∂f/∂x_i = (f(x + h·e_i) − f(x − h·e_i)) / 2h for every i.
func finiteDifferences(_ x: [Double], step: Double, _ f: ([Double]) -> Double) -> [Double] {
    var values = x
    return x.indices.map { i in
        values[i] = x[i] + step
        let up = f(values)
        values[i] = x[i] - step
        let down = f(values)
        values[i] = x[i]
        return (up - down) / (2 * step)
    }
}

/// Max pooling of one NCHW tensor in Float with NaN semantics: a NaN is the maximum (the first NaN wins),
/// else the first maximum in row-major order; plus the flat in-plane index of the winner.
func referenceMaxPoolWithNaN(_ x: [Float], _ d: Pool2DDescriptor) -> (values: [Float], indices: [Int32]) {
    var values: [Float] = [], indices: [Int32] = []
    for plane in 0..<(d.batch * d.channels) {
        for oh in 0..<d.outputHeight {
            for ow in 0..<d.outputWidth {
                var best: Float = 0, bestIndex = -1
                for kh in 0..<d.kernelHeight {
                    for kw in 0..<d.kernelWidth {
                        let ih = oh * d.strideHeight - d.paddingHeight + kh
                        let iw = ow * d.strideWidth - d.paddingWidth + kw
                        guard ih >= 0, ih < d.inputHeight, iw >= 0, iw < d.inputWidth else { continue }
                        let value = x[(plane * d.inputHeight + ih) * d.inputWidth + iw]
                        if bestIndex < 0 || value > best || (value.isNaN && !best.isNaN) {
                            best = value; bestIndex = ih * d.inputWidth + iw
                        }
                    }
                }
                values.append(best)
                indices.append(Int32(bestIndex))
            }
        }
    }
    return (values, indices)
}

/// dx of max pooling from the indices: every output's gradient added at its index (indices outside the plane
/// ignored), in Double.
func referenceMaxPoolBackward(_ dy: [Float], _ indices: [Int32], _ d: Pool2DDescriptor) -> [Double] {
    let (inputPlane, outputPlane) = (d.inputHeight * d.inputWidth, d.outputHeight * d.outputWidth)
    var dx = [Double](repeating: 0, count: d.inputCount)
    for plane in 0..<(d.batch * d.channels) {
        for o in 0..<outputPlane {
            let p = Int(indices[plane * outputPlane + o])
            if p >= 0 && p < inputPlane { dx[plane * inputPlane + p] += Double(dy[plane * outputPlane + o]) }
        }
    }
    return dx
}

/// The 2×2/stride-2 fast path of `maxPool2D`/`maxPool2DBackward`: four outputs per SIMD step, a last group that
/// overlaps the previous one, a scalar form below four outputs per row, odd widths/heights leaving a column
/// and row no window covers, ties, NaN and infinities, and indices outside their window in the backward pass.
extension PoolTests {
    /// (height, width): output widths 1…3 (scalar), 4 (one group), 5…7 and 14 (overlapping last group),
    /// odd sizes leaving an uncovered column/row, and the R2 shapes 28×28 and 14×14.
    var fastPoolDescriptors: [Pool2DDescriptor] {
        [(2, 2), (3, 5), (5, 7), (4, 8), (7, 9), (9, 11), (6, 15), (13, 33), (28, 28), (14, 14)].map { size in
            Pool2DDescriptor(batch: 2, channels: 3, inputHeight: size.0, inputWidth: size.1, kernelHeight: 2,
                             kernelWidth: 2, strideHeight: 2, strideWidth: 2)
        }
    }

    func testFastMaxPoolMatchesReference() throws {
        for d in fastPoolDescriptors {
            XCTAssertTrue(d.isTwoByTwoStrideTwo)
            // Random values; values from {−3, −2, −1} (ties in almost every window); and values with NaNs
            // and infinities sprinkled in.
            let inputs: [[Float]] = [
                uniform(d.inputCount),
                (0..<d.inputCount).map { _ in Float(Int.random(in: 0...2, using: &random)) - 3 },
                (0..<d.inputCount).map { _ in
                    switch Int.random(in: 0..<8, using: &random) {
                    case 0: .nan
                    case 1: .infinity
                    case 2: -.infinity
                    default: Float(Int.random(in: -1...1, using: &random))
                    }
                },
            ]
            for (kind, x) in inputs.enumerated() {
                let y = try poisoned(d.outputCount), indices = try poisoned(d.outputCount)
                try backend.maxPool2D(try buffer(x), y, indices, descriptor: d)
                let expected = referenceMaxPoolWithNaN(x, d)
                let values = try read(y)
                XCTAssertEqual(values.map(\.bitPattern), expected.values.map(\.bitPattern),
                               context("fast max pool values, input kind \(kind), \(d.summary)"))
                XCTAssertEqual(try backend.readInts(indices, count: d.outputCount), expected.indices,
                               context("fast max pool indices, input kind \(kind), \(d.summary)"))
                if kind == 0 {   // the Double reference of the general tests agrees on ordinary inputs
                    let general = referenceMaxPool(x.map(Double.init), d)
                    XCTAssertEqual(values, general.values.map(Float.init), context("fast vs general \(d.summary)"))
                }
            }
        }
    }

    /// The backward pass writes every element of the poisoned dx: the gradient at each window's index, zero
    /// elsewhere, including the column and row that no window covers at odd sizes.
    func testFastMaxPoolBackwardMatchesReference() throws {
        for d in fastPoolDescriptors {
            let x = (0..<d.inputCount).map { _ in Float(Int.random(in: 0...3, using: &random)) }
            let y = try poisoned(d.outputCount), indices = try poisoned(d.outputCount)
            try backend.maxPool2D(try buffer(x), y, indices, descriptor: d)
            let dy = uniform(d.outputCount)
            let dx = try poisoned(d.inputCount)
            try backend.maxPool2DBackward(try buffer(dy), indices, dx, descriptor: d)
            let expected = referenceMaxPoolBackward(dy, try backend.readInts(indices, count: d.outputCount), d)
            XCTAssertEqual(try read(dx), expected.map(Float.init), context("fast max pool backward \(d.summary)"))
        }
    }

    /// Indices that do not point into their own window (another window, or outside the plane) send the plane
    /// to the general scatter: gradients pointing at the same element add up, out-of-plane ones are dropped.
    func testFastMaxPoolBackwardHandlesForeignIndices() throws {
        for d in fastPoolDescriptors {
            let inputPlane = d.inputHeight * d.inputWidth
            let dy = uniform(d.outputCount)
            // Mostly window-local indices (as maxPool2D makes them), with a few foreign ones in some planes.
            let x = uniform(d.inputCount)
            let own = try poisoned(d.outputCount), values = try poisoned(d.outputCount)
            try backend.maxPool2D(try buffer(x), values, own, descriptor: d)
            var indices = try backend.readInts(own, count: d.outputCount)
            let foreign = Int.random(in: 0..<indices.count, using: &random)
            indices[foreign] = Int32(Int.random(in: 0..<inputPlane, using: &random))
            indices[Int.random(in: 0..<indices.count, using: &random)] = Int32(inputPlane)   // outside the plane
            indices[Int.random(in: 0..<indices.count, using: &random)] = -1
            let dx = try poisoned(d.inputCount)
            try backend.maxPool2DBackward(try buffer(dy), try intBuffer(indices), dx, descriptor: d)
            assertClose(try read(dx), referenceMaxPoolBackward(dy, indices, d), relative: 1e-6, absolute: 1e-7,
                        "foreign indices \(d.summary)")
        }
    }
}
