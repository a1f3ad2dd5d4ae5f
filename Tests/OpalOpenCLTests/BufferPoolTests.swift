import Foundation
import OpenCLKit
import XCTest
@testable import OpalOpenCL

final class BufferPoolTests: XCTestCase {
    private var context: CLContext!

    override func setUpWithError() throws {
        context = try CLContext(device: CLPlatform.defaultDevice())
    }

    func testSizeClasses() {
        XCTAssertEqual(BufferPool.sizeClass(for: 0), 256)
        XCTAssertEqual(BufferPool.sizeClass(for: 1), 256)
        XCTAssertEqual(BufferPool.sizeClass(for: 257), 512)
        XCTAssertEqual(BufferPool.sizeClass(for: 4000), 4096)
        XCTAssertEqual(BufferPool.sizeClass(for: 1 << 20), 1 << 20)
        XCTAssertEqual(BufferPool.sizeClass(for: (1 << 20) + 1), 2 << 20)
        XCTAssertEqual(BufferPool.sizeClass(for: (5 << 20) - 3), 5 << 20)
        for _ in 0..<100 {
            let request = Int.random(in: 0...(64 << 20))
            let size = BufferPool.sizeClass(for: request)
            XCTAssertGreaterThanOrEqual(size, request)
            XCTAssertLessThanOrEqual(size, max(2 * request, 256), "request \(request)")
        }
    }

    func testRecycledBufferIsReused() throws {
        let pool = BufferPool(context: context)
        let first = try pool.allocate(byteCount: 1000)
        XCTAssertGreaterThanOrEqual(first.byteCount, 1000)
        XCTAssertEqual(pool.liveBytes, first.byteCount)
        XCTAssertEqual(pool.cachedBytes, 0)
        pool.recycle(first)
        pool.recycle(first)  // a second recycle is ignored
        XCTAssertEqual(pool.liveBytes, 0)
        XCTAssertEqual(pool.cachedBytes, first.byteCount)

        let second = try pool.allocate(byteCount: 900)  // same size class
        XCTAssertTrue(second === first)
        XCTAssertEqual(pool.reuseCount, 1)
        XCTAssertEqual(pool.cachedBytes, 0)
        let other = try pool.allocate(byteCount: 5000)  // different class: a new buffer
        XCTAssertFalse(other === first)

        // The reused buffer really works.
        let queue = try CLCommandQueue(context: context)
        let values = (0..<225).map { _ in Float.random(in: -1...1) }
        try queue.fill(second, with: .nan, byteCount: second.byteCount)
        try values.withUnsafeBytes { try queue.write(second, from: $0) }
        var back = [Float](repeating: 0, count: 225)
        try back.withUnsafeMutableBytes { try queue.read(second, into: $0) }
        XCTAssertEqual(back, values)

        pool.recycle(second)
        pool.recycle(other)
        XCTAssertEqual(pool.cachedBytes, second.byteCount + other.byteCount)
        pool.trim()
        XCTAssertEqual(pool.cachedBytes, 0)
        XCTAssertFalse(try pool.allocate(byteCount: 1000) === first)
    }

    func testDroppedBuffersLeaveLiveBytes() throws {
        let pool = BufferPool(context: context)
        do {
            let buffer = try pool.allocate(byteCount: 3000)
            XCTAssertEqual(pool.liveBytes, buffer.byteCount)
        }
        XCTAssertEqual(pool.liveBytes, 0)
    }

    func testHugeRequestThrowsOutOfMemoryNamingTheSize() throws {
        let pool = BufferPool(context: context)
        let keep = try pool.allocate(byteCount: 4096)
        let cached = try pool.allocate(byteCount: 100)
        pool.recycle(cached)
        let huge = 1 << 50
        XCTAssertThrowsError(try pool.allocate(byteCount: huge)) { error in
            guard case .outOfMemory(let requested, let cachedBytes, let liveBytes, let deviceBytes)? = error as? CLError else {
                return XCTFail("expected outOfMemory, got \(error)")
            }
            XCTAssertEqual(requested, huge)
            XCTAssertEqual(liveBytes, keep.byteCount)
            XCTAssertEqual(cachedBytes, cached.byteCount)
            XCTAssertEqual(deviceBytes, context.device.globalMemoryBytes)
            let message = "\(error)"
            XCTAssertTrue(message.contains("\(huge)") && message.contains("1.0 PiB"), message)
        }
        // The pool still works afterwards.
        let small = try pool.allocate(byteCount: 64)
        XCTAssertGreaterThanOrEqual(small.byteCount, 64)
        XCTAssertThrowsError(try pool.allocate(byteCount: -1))
    }

    /// A failed allocation releases the cache and retries once; when that fails too, the error says how
    /// much was asked and what is live and cached; the pool keeps working for smaller requests.
    func testAllocationFailureReleasesTheCacheRetriesThenReports() throws {
        let pool = BufferPool(context: context)
        let half = 1 << 19, whole = 1 << 20
        pool.budgetBytes = whole + half / 2                       // 1.25 MiB
        let cached = try pool.allocate(byteCount: half - 1000)    // size class 512 KiB
        pool.recycle(cached)
        XCTAssertEqual(pool.cachedBytes, half)
        // 512 KiB cached + 1 MiB new > budget: the first try fails, the cache is released, the retry succeeds.
        let first = try pool.allocate(byteCount: whole - 5000)
        XCTAssertEqual(pool.cachedBytes, 0)
        XCTAssertEqual(pool.liveBytes, whole)
        // 1 MiB live + 1 MiB new > budget even with an empty cache: reported, naming the sizes.
        XCTAssertThrowsError(try pool.allocate(byteCount: whole - 5000)) { error in
            guard case .outOfMemory(let requested, let cachedBytes, let liveBytes, _)? = error as? CLError else {
                return XCTFail("expected outOfMemory, got \(error)")
            }
            XCTAssertEqual(requested, whole - 5000)
            XCTAssertEqual(cachedBytes, 0)
            XCTAssertEqual(liveBytes, whole)
            XCTAssertTrue("\(error)".contains("requested") && "\(error)".contains("1.0 MiB live"), "\(error)")
        }
        // A smaller request still fits, and so does the big one once the first buffer is handed back.
        XCTAssertNoThrow(try pool.allocate(byteCount: 1000))
        pool.recycle(first)
        XCTAssertNoThrow(try pool.allocate(byteCount: whole - 5000))
    }

    func testConcurrentAllocateAndRecycle() throws {
        let pool = BufferPool(context: context)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for round in 0..<50 {
                if let buffer = try? pool.allocate(byteCount: 256 * (1 + (worker + round) % 5)) {
                    pool.recycle(buffer)
                }
            }
        }
        XCTAssertEqual(pool.liveBytes, 0)
        XCTAssertGreaterThan(pool.reuseCount, 0)
    }
}
