import Foundation
import Synchronization
import XCTest
@testable import OpalCPU

/// The CPU backend's thread pool (Sources/CParallel): every index runs exactly once, on more than one thread
/// when asked, nested loops run inline, and two threads starting loops at once both complete.
final class ParallelTests: XCTestCase {
    let backend = CPUBackend()

    func testEveryIndexRunsOnce() {
        for iterations in [1, 2, 3, 17, 1000] {
            let counts = Mutex([Int](repeating: 0, count: iterations))
            backend.parallelFor(iterations: iterations, threads: 4) { index in
                counts.withLock { $0[index] += 1 }
            }
            XCTAssertEqual(counts.withLock { $0 }, Array(repeating: 1, count: iterations), "\(iterations) iterations")
        }
    }

    func testLoopsUseSeveralThreads() {
        // Each index waits until a second thread has joined (or 2 s pass): one thread alone would time out.
        let threads = Mutex<Set<UInt64>>([])
        let deadline = Date().addingTimeInterval(2)
        backend.parallelFor(iterations: 2, threads: 2) { _ in
            threads.withLock { $0.insert(UInt64(pthread_self())) }
            while threads.withLock({ $0.count }) < 2 && Date() < deadline { sched_yield() }
        }
        XCTAssertEqual(threads.withLock { $0.count }, 2)
    }

    func testNestedLoopRunsInline() {
        let total = Atomic<Int>(0)
        backend.parallelFor(iterations: 8, threads: 4) { _ in
            backend.parallelFor(iterations: 10, threads: 4) { index in total.add(index, ordering: .relaxed) }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 8 * 45)
    }

    func testConcurrentCallersBothFinish() {
        let sums = Mutex([0, 0])
        nonisolated(unsafe) let backend = backend
        DispatchQueue.concurrentPerform(iterations: 2) { caller in
            for _ in 0..<200 {
                backend.parallelFor(iterations: 16, threads: 4) { index in sums.withLock { $0[caller] += index } }
            }
        }
        XCTAssertEqual(sums.withLock { $0 }, [200 * 120, 200 * 120])
    }
}
