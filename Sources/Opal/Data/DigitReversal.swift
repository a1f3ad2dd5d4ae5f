import Foundation

/// The digit-reversal task of the encoder–decoder Transformer: the source is a random string of
/// decimal digits, the target the same digits in reverse order ("30512" → "21503").
///
/// Token ids (vocabulary 13): 0 = padding, 1 = begin, 2 = end, 3…12 = the digits 0…9.
///
/// Training examples come from an endless seeded stream (`TrainingStream`), held-out examples from a
/// fixed set drawn with another seed (`heldOut(count:seed:)`). The stream skips every string of the
/// held-out set longer than `sharedLengthLimit` digits, so the held-out strings of 4 digits and more
/// are never trained on. The 1,110 strings of 1 to 3 digits are too few to keep apart (a held-out set
/// of a few hundred examples would take most of them away from training): they occur in both.
public struct DigitReversal: Sendable, Hashable {
    public static let padding: Int32 = 0
    public static let begin: Int32 = 1
    public static let end: Int32 = 2
    /// Id of the digit 0; digit d is `firstDigit + d`.
    public static let firstDigit: Int32 = 3
    public static let vocabularySize = 13
    /// Strings of at most this many digits may occur in both the training stream and the held-out set.
    public static let sharedLengthLimit = 3

    /// Source lengths are drawn uniformly from `minimumLength...maximumLength`.
    public let minimumLength: Int
    public let maximumLength: Int

    /// - Throws: `TensorError.invalidArgument` unless `1 ≤ minimumLength ≤ maximumLength`.
    public init(minimumLength: Int = 1, maximumLength: Int = 12) throws {
        guard minimumLength >= 1, minimumLength <= maximumLength else {
            throw TensorError.invalidArgument(op: "DigitReversal",
                                              reason: "lengths must satisfy 1 ≤ minimum (\(minimumLength)) ≤ maximum (\(maximumLength))")
        }
        self.minimumLength = minimumLength; self.maximumLength = maximumLength
    }

    /// One random source string: token ids of its digits (no begin, end or padding).
    public func draw(using generator: inout SeededGenerator) -> [Int32] {
        let length = Int.random(in: minimumLength...maximumLength, using: &generator)
        return (0..<length).map { _ in Self.firstDigit + Int32.random(in: 0...9, using: &generator) }
    }

    /// The target of `source`: its tokens reversed.
    public static func target(of source: [Int32]) -> [Int32] { source.reversed() }

    /// Digit tokens as text ("3 4 5" → "012"); begin, end and padding as `^`, `$`, `_`.
    public static func text(_ ids: [Int32]) -> String {
        String(ids.map { id -> Character in
            switch id {
            case padding: return "_"
            case begin: return "^"
            case end: return "$"
            case firstDigit...(firstDigit + 9): return Character(String(id - firstDigit))
            default: return "?"
            }
        })
    }

    /// Digit tokens of a string of digits ("012" → [3, 4, 5]); nil when it holds anything else.
    public static func ids(_ digits: String) -> [Int32]? {
        var result: [Int32] = []
        for character in digits {
            guard let value = character.wholeNumberValue, character.isASCII else { return nil }
            result.append(firstDigit + Int32(value))
        }
        return result
    }

    /// `count` held-out source strings drawn with `seed` (independent of the training stream's seed).
    public func heldOut(count: Int, seed: UInt64) -> [[Int32]] {
        var generator = SeededGenerator(seed: seed, stream: 0x4845_4C44)   // "HELD"
        return (0..<count).map { _ in draw(using: &generator) }
    }

    /// An endless stream of training batches that never yields a held-out string longer than
    /// `DigitReversal.sharedLengthLimit` digits.
    public struct TrainingStream: Sendable {
        public let task: DigitReversal
        private var generator: SeededGenerator
        private let excluded: Set<[Int32]>
        /// Strings skipped so far because they belong to the held-out set.
        public private(set) var skipped = 0

        public init(task: DigitReversal, seed: UInt64, excluding heldOut: [[Int32]] = []) {
            self.task = task
            generator = SeededGenerator(seed: seed, stream: 0x5452_4149)       // "TRAI"
            excluded = Set(heldOut.filter { $0.count > DigitReversal.sharedLengthLimit })
        }

        /// The next source string.
        public mutating func next() -> [Int32] {
            while true {
                let source = task.draw(using: &generator)
                if !excluded.contains(source) { return source }
                skipped += 1
            }
        }

        /// The next `batchSize` examples as a batch.
        public mutating func nextBatch(_ batchSize: Int) -> DigitReversalBatch {
            DigitReversalBatch(sources: (0..<batchSize).map { _ in next() })
        }
    }
}

/// A padded batch of digit-reversal examples, on the host.
///
/// With B rows, S = the longest source and T = S + 1:
/// - `sourceIDs` [B, S]: the digits, then padding (0); `sourceMask` [B, S] int32: 1 on digits, 0 on padding.
/// - `decoderInput` [B, T]: begin, the reversed digits, padding.
/// - `decoderTarget` [B, T]: the reversed digits, end, padding (0) — the decoder input shifted by one.
/// - `lossMask` [B, T] float: 1 on the target's digits and its end token, 0 on padding.
public struct DigitReversalBatch: Sendable, Equatable {
    public let sources: [[Int32]]
    public var targets: [[Int32]] { sources.map(DigitReversal.target(of:)) }
    public let batchSize: Int
    public let sourceLength: Int
    public var targetLength: Int { sourceLength + 1 }
    public let sourceIDs: [Int32]
    public let sourceMask: [Int32]
    public let decoderInput: [Int32]
    public let decoderTarget: [Int32]
    public let lossMask: [Float]
    /// Number of real target positions (the sum of `lossMask`): digits plus one end token per row.
    public var realPositions: Int { sources.reduce(0) { $0 + $1.count + 1 } }

    /// - Parameter sources: at least one source string (digit tokens, no padding), none empty.
    public init(sources: [[Int32]]) {
        self.sources = sources
        batchSize = sources.count
        sourceLength = max(1, sources.map(\.count).max() ?? 1)
        let t = sourceLength + 1
        var ids = [Int32](repeating: DigitReversal.padding, count: batchSize * sourceLength)
        var mask = [Int32](repeating: 0, count: batchSize * sourceLength)
        var input = [Int32](repeating: DigitReversal.padding, count: batchSize * t)
        var target = [Int32](repeating: DigitReversal.padding, count: batchSize * t)
        var loss = [Float](repeating: 0, count: batchSize * t)
        for (b, source) in sources.enumerated() {
            let reversed = DigitReversal.target(of: source)
            for (i, id) in source.enumerated() { ids[b * sourceLength + i] = id; mask[b * sourceLength + i] = 1 }
            input[b * t] = DigitReversal.begin
            for (i, id) in reversed.enumerated() { input[b * t + i + 1] = id; target[b * t + i] = id }
            target[b * t + reversed.count] = DigitReversal.end
            for i in 0...reversed.count { loss[b * t + i] = 1 }
        }
        sourceIDs = ids; sourceMask = mask; decoderInput = input; decoderTarget = target; lossMask = loss
    }

    /// The batch's tensors on `device`: source ids and mask [B, S] int32, decoder input [B, T] int32.
    public func inputTensors(on device: Device) throws -> (source: Tensor, sourceMask: Tensor, decoderInput: Tensor) {
        (try Tensor(sourceIDs, shape: [batchSize, sourceLength], on: device),
         try Tensor(sourceMask, shape: [batchSize, sourceLength], on: device),
         try Tensor(decoderInput, shape: [batchSize, targetLength], on: device))
    }
}
