import OpalCore
import XCTest
@testable import OpalCPU

final class CPUBackendTests: CPUTestCase {
    func testIdentity() {
        XCTAssertEqual(backend.name, "cpu")
        XCTAssertEqual(backend.kind, .cpu)
        XCTAssertTrue(backend.deviceDescription.hasPrefix("Native CPU (OpenBLAS, "), backend.deviceDescription)
        XCTAssertGreaterThanOrEqual(backend.threadCount, 1)
    }

    func testWriteReadRoundTripsFloatsAndInts() throws {
        for size in awkwardSizes + [0, 70_000] {
            let values = uniform(size)
            let floats = try poisoned(size)
            try backend.write(values, to: floats)
            XCTAssertEqual(try backend.readFloats(floats, count: size), values, context("floats, size \(size)"))

            let ints = (0..<size).map { _ in Int32.random(in: .min ... .max, using: &random) }
            let intBuffer = try backend.allocate(count: size)
            try backend.write(ints, to: intBuffer)
            XCTAssertEqual(try backend.readInts(intBuffer, count: size), ints, context("ints, size \(size)"))
        }
    }

    func testFillWritesExactlyCountElements() throws {
        for size in awkwardSizes {
            let buffer = try poisoned(size + 3)
            let value = Float.random(in: -5...5, using: &random)
            try backend.fill(buffer, value: value, count: size)
            let result = try read(buffer)
            XCTAssertEqual(Array(result[..<size]), [Float](repeating: value, count: size), context("size \(size)"))
            XCTAssertTrue(result[size...].allSatisfy(\.isNaN), context("fill wrote past count \(size)"))
            try backend.fill(buffer, value: 0, count: size)
            XCTAssertEqual(Array(try read(buffer)[..<size]), [Float](repeating: 0, count: size))
        }
    }

    func testBuffersAreAlignedAndLargeOnesAreReused() throws {
        var first = try backend.allocate(count: 100_003) as? CPUBuffer
        let address = first!.pointer
        XCTAssertEqual(Int(bitPattern: address) % 64, 0)
        first = nil
        let second = try backend.allocate(count: 100_003) as! CPUBuffer
        XCTAssertEqual(second.pointer, address, "a freed large buffer of the same size is reused")
        XCTAssertEqual(second.count, 100_003)
        let small = try backend.allocate(count: 7) as! CPUBuffer
        XCTAssertEqual(Int(bitPattern: small.pointer) % 64, 0)
        XCTAssertEqual(try backend.allocate(count: 0).count, 0)
        backend.trimCache()
    }

    func testRejectsForeignAndTooSmallBuffers() throws {
        XCTAssertThrowsError(try backend.fill(ForeignBuffer(), value: 1, count: 1)) { error in
            guard case TensorError.device = error else { return XCTFail("unexpected \(error)") }
        }
        let small = try poisoned(4)
        XCTAssertThrowsError(try backend.write([Float](repeating: 1, count: 5), to: small))
        XCTAssertThrowsError(try backend.readFloats(small, count: 5))
        XCTAssertThrowsError(try backend.unary(.relu, small, small, count: 5))
        XCTAssertThrowsError(try backend.allocate(count: -1))
        XCTAssertNoThrow(try backend.synchronize())
    }
}
