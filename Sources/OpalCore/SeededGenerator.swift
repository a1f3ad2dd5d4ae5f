/// A small, fast, seedable random number generator (SplitMix64, Steele, Lea & Flood 2014).
///
/// Every shuffle, split and initialisation in Opal that takes a `seed` draws from this generator, so a
/// run is reproducible on every platform and Swift version: the sequence is a pure function of the seed,
/// and the helpers below (`nextIndex(below:)`, `shuffle(_:)`) do not depend on the standard library's
/// unspecified algorithms.
///
/// `state ← state + 0x9E3779B97F4A7C15; z ← state; z ← (z ⊕ z≫30)·0xBF58476D1CE4E5B9;
///  z ← (z ⊕ z≫27)·0x94D049BB133111EB; return z ⊕ z≫31`
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    /// The whole generator state; copying the struct forks the sequence.
    public var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    /// A generator whose seed mixes `seed` and a stream number (an epoch, a worker index …), so that
    /// nearby stream numbers give unrelated sequences.
    public init(seed: UInt64, stream: UInt64) {
        var mixer = SeededGenerator(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        state = mixer.next()
    }

    @inlinable
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniformly distributed integer in `0..<upperBound` (Lemire's multiply-shift with rejection,
    /// so without modulo bias). Returns 0 when `upperBound <= 1`.
    public mutating func nextIndex(below upperBound: Int) -> Int {
        guard upperBound > 1 else { return 0 }
        let bound = UInt64(upperBound)
        var product = next().multipliedFullWidth(by: bound)
        if product.low < bound {
            let threshold = (0 &- bound) % bound
            while product.low < threshold {
                product = next().multipliedFullWidth(by: bound)
            }
        }
        return Int(product.high)
    }

    /// A uniformly distributed `Double` in [0, 1) from the top 53 bits.
    public mutating func nextUnitDouble() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Shuffles `elements` in place with the Fisher–Yates algorithm driven by this generator.
    public mutating func shuffle<Element>(_ elements: inout [Element]) {
        guard elements.count > 1 else { return }
        for i in stride(from: elements.count - 1, to: 0, by: -1) {
            let j = nextIndex(below: i + 1)
            if i != j { elements.swapAt(i, j) }
        }
    }

    /// `0..<count` in a random order that depends only on the seed.
    public mutating func permutation(count: Int) -> [Int] {
        var indices = Array(0..<max(0, count))
        shuffle(&indices)
        return indices
    }
}
