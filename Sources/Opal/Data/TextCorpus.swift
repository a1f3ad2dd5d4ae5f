import Foundation

/// Errors from reading a text corpus. Each names the text (file) and what is wrong.
public enum TextCorpusError: Error, CustomStringConvertible, Equatable, Sendable {
    case empty(name: String)
    case invalidUTF8(name: String, byteOffset: Int)
    /// The text is too short to make one training batch (or a validation part).
    case tooShort(name: String, characters: Int, needed: Int, reason: String)
    /// A string to encode holds characters the vocabulary does not have.
    case unknownCharacters(name: String, characters: [String])
    case invalidArgument(name: String, reason: String)

    public var description: String {
        switch self {
        case let .empty(name):
            return "\(name): the text is empty"
        case let .invalidUTF8(name, offset):
            return "\(name): not valid UTF-8 text (first bad byte at offset \(offset))"
        case let .tooShort(name, characters, needed, reason):
            return "\(name): the text is too short: \(characters) characters, \(reason) needs at least \(needed)"
        case let .unknownCharacters(name, characters):
            return "characters not in the vocabulary of \(name): \(characters.map { "\"\($0)\"" }.joined(separator: ", "))"
        case let .invalidArgument(name, reason):
            return "\(name): \(reason)"
        }
    }
}

/// A UTF-8 text as a sequence of character ids for a character-level language model.
///
/// The vocabulary is the set of Unicode scalars in the text, sorted by code point (id = rank). The
/// last `validationFraction` of the text is held out for validation (a contiguous tail, so no
/// validation sentence is seen in training).
public struct TextCorpus: Sendable {
    /// The file name (or a label), used in errors and reports.
    public let name: String
    /// Id → character.
    public let vocabulary: [Unicode.Scalar]
    /// The whole text as ids.
    public let ids: [Int32]
    /// Ids of the training part (the head of the text).
    public let training: ArraySlice<Int32>
    /// Ids of the validation part (the tail).
    public let validation: ArraySlice<Int32>
    private let index: [Unicode.Scalar: Int32]

    public var vocabularySize: Int { vocabulary.count }

    /// - Throws: `TextCorpusError.empty` for an empty text, `.invalidArgument` for a fraction outside [0, 1).
    public init(text: String, name: String, validationFraction: Double = 0.1) throws {
        let scalars = Array(text.unicodeScalars)
        try self.init(scalars: scalars, vocabulary: Set(scalars).sorted { $0.value < $1.value }, name: name,
                      validationFraction: validationFraction)
    }

    /// A corpus of `text` over a vocabulary fixed beforehand (e.g. a pretrained model's, for fine-tuning
    /// it on another text).
    /// - Throws: `TextCorpusError.unknownCharacters` naming the characters of `text` outside `vocabulary`,
    ///   `.empty` for an empty text.
    public init(text: String, name: String, vocabulary: [Unicode.Scalar], validationFraction: Double = 0.1) throws {
        try self.init(scalars: Array(text.unicodeScalars), vocabulary: vocabulary, name: name, validationFraction: validationFraction)
    }

    private init(scalars: [Unicode.Scalar], vocabulary: [Unicode.Scalar], name: String, validationFraction: Double) throws {
        guard !scalars.isEmpty else { throw TextCorpusError.empty(name: name) }
        guard validationFraction >= 0, validationFraction < 1 else {
            throw TextCorpusError.invalidArgument(name: name, reason: "the validation fraction must lie in [0, 1), got \(validationFraction)")
        }
        let index = Dictionary(vocabulary.enumerated().map { ($0.element, Int32($0.offset)) }, uniquingKeysWith: { first, _ in first })
        var unknown: [String] = []
        let ids = scalars.map { scalar -> Int32 in
            if let id = index[scalar] { return id }
            if !unknown.contains(String(scalar)) { unknown.append(String(scalar)) }
            return 0
        }
        guard unknown.isEmpty else { throw TextCorpusError.unknownCharacters(name: name, characters: unknown) }
        self.vocabulary = vocabulary; self.index = index; self.ids = ids
        let validationCount = Int((Double(ids.count) * validationFraction).rounded())
        training = ids[..<(ids.count - validationCount)]
        validation = ids[(ids.count - validationCount)...]
        self.name = name
    }

    /// Reads a UTF-8 text file (a UTF-8 byte-order mark is dropped; a Project Gutenberg header and
    /// licence, when present, are cut away with `strippingGutenbergBoilerplate`).
    /// - Throws: `DataError.unreadableFile`, `TextCorpusError.empty` or `.invalidUTF8`, naming the file.
    public static func load(contentsOf url: URL, validationFraction: Double = 0.1) throws -> TextCorpus {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError.unreadableFile(path: url.path, reason: (error as NSError).localizedDescription)
        }
        return try TextCorpus(utf8: [UInt8](data), name: url.path, validationFraction: validationFraction)
    }

    /// Decodes UTF-8 bytes (see `load(contentsOf:)`).
    public init(utf8 bytes: [UInt8], name: String, validationFraction: Double = 0.1) throws {
        guard !bytes.isEmpty else { throw TextCorpusError.empty(name: name) }
        var body = bytes[...]
        if body.starts(with: [0xEF, 0xBB, 0xBF]) { body = body.dropFirst(3) }
        guard let text = String(validating: body, as: UTF8.self) else {
            throw TextCorpusError.invalidUTF8(name: name, byteOffset: TextCorpus.firstInvalidUTF8Offset(Array(body)) + (bytes.count - body.count))
        }
        try self.init(text: TextCorpus.strippingGutenbergBoilerplate(text), name: name, validationFraction: validationFraction)
    }

    /// The offset of the first byte where UTF-8 decoding fails.
    static func firstInvalidUTF8Offset(_ bytes: [UInt8]) -> Int {
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        var offset = 0
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): offset += UTF8.width(scalar)
            case .emptyInput: return offset
            case .error: return offset
            }
        }
    }

    /// The text between Project Gutenberg's `*** START OF …` and `*** END OF …` lines (the whole
    /// text when they are absent), with Windows line ends made `\n`.
    public static func strippingGutenbergBoilerplate(_ text: String) -> String {
        var body = text.replacingOccurrences(of: "\r\n", with: "\n")
        if let start = body.range(of: "*** START OF") {
            let lineEnd = body[start.upperBound...].firstIndex(of: "\n") ?? body.endIndex
            body = String(body[lineEnd...])
        }
        if let end = body.range(of: "*** END OF") ?? body.range(of: "End of the Project Gutenberg") ?? body.range(of: "End of Project Gutenberg") {
            body = String(body[..<end.lowerBound])
        }
        let trimmed = body.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? text : trimmed + "\n"
    }

    /// The ids of `string`.
    /// - Throws: `TextCorpusError.unknownCharacters` naming the characters the vocabulary lacks.
    public func encode(_ string: String) throws -> [Int32] {
        var result: [Int32] = []
        var unknown: [String] = []
        for scalar in string.unicodeScalars {
            if let id = index[scalar] { result.append(id) } else if !unknown.contains(String(scalar)) { unknown.append(String(scalar)) }
        }
        guard unknown.isEmpty else { throw TextCorpusError.unknownCharacters(name: name, characters: unknown) }
        return result
    }

    /// The text of `ids` (ids outside the vocabulary become U+FFFD).
    public func decode(_ ids: some Sequence<Int32>) -> String {
        var result = String.UnicodeScalarView()
        for id in ids { result.append(vocabulary.indices.contains(Int(id)) ? vocabulary[Int(id)] : "\u{FFFD}") }
        return String(result)
    }

    /// The entropy of the training part's character frequencies in nats per character: the loss of
    /// the best model that ignores context, the bar a language model must go well below.
    public var unigramEntropy: Double {
        TextCorpus.entropy(of: training, vocabularySize: vocabularySize)
    }

    static func entropy(of ids: some Collection<Int32>, vocabularySize: Int) -> Double {
        var counts = [Int](repeating: 0, count: vocabularySize)
        for id in ids { counts[Int(id)] += 1 }
        let total = Double(ids.count)
        return counts.reduce(0.0) { sum, count in
            count == 0 ? sum : sum - Double(count) / total * Foundation.log(Double(count) / total)
        }
    }
}

/// Batches for truncated backpropagation through time over one id stream.
///
/// The stream is cut into `batchSize` equal rows (row b starts at b · rowLength); batch k holds
/// positions `k · sequenceLength ..< (k + 1) · sequenceLength` of every row as inputs and the next
/// character of each as targets. Consecutive batches thus continue each row where the previous one
/// stopped, so the recurrent state at the end of batch k is the right start for batch k + 1.
public struct TextBatches: Sendable {
    public let batchSize: Int
    public let sequenceLength: Int
    /// Positions per row (the stream's length − 1, divided by the batch size).
    public let rowLength: Int
    private let stream: [Int32]

    /// Batches per pass over the stream.
    public var count: Int { rowLength / sequenceLength }

    /// - Throws: `TextCorpusError.tooShort` when the stream cannot fill one batch, `.invalidArgument`
    ///   for a batch size or sequence length below 1; `name` is put in the message.
    public init(_ stream: some Collection<Int32>, batchSize: Int, sequenceLength: Int, name: String, part: String = "the training part") throws {
        guard batchSize > 0 else { throw TextCorpusError.invalidArgument(name: name, reason: "the batch size must be positive, got \(batchSize)") }
        guard sequenceLength > 0 else {
            throw TextCorpusError.invalidArgument(name: name, reason: "the sequence length must be positive, got \(sequenceLength)")
        }
        self.stream = Array(stream)
        self.batchSize = batchSize; self.sequenceLength = sequenceLength
        rowLength = max(0, self.stream.count - 1) / batchSize
        guard rowLength >= sequenceLength else {
            throw TextCorpusError.tooShort(name: name, characters: self.stream.count, needed: batchSize * sequenceLength + 1,
                                           reason: "\(part) with batch size \(batchSize) and sequence length \(sequenceLength)")
        }
    }

    /// Batch `k` (0 ..< count) as row-major [batchSize, sequenceLength] inputs and targets.
    public func batch(_ k: Int) -> (inputs: [Int32], targets: [Int32]) {
        var inputs: [Int32] = [], targets: [Int32] = []
        inputs.reserveCapacity(batchSize * sequenceLength); targets.reserveCapacity(batchSize * sequenceLength)
        for row in 0..<batchSize {
            let start = row * rowLength + k * sequenceLength
            inputs += stream[start..<(start + sequenceLength)]
            targets += stream[(start + 1)...(start + sequenceLength)]
        }
        return (inputs, targets)
    }
}
