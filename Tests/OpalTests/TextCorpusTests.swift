import Foundation
import XCTest
@testable import Opal

final class TextCorpusTests: ScratchDirectoryTestCase {
    private func write(_ bytes: [UInt8], to name: String) throws -> URL {
        let url = directory.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    func testVocabularyEncodingAndSplit() throws {
        let corpus = try TextCorpus(text: "abcabcabca\nß", name: "tiny", validationFraction: 0.25)
        XCTAssertEqual(corpus.vocabulary, ["\n", "a", "b", "c", "ß"])
        XCTAssertEqual(corpus.ids, [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 0, 4])
        XCTAssertEqual(Array(corpus.training), [1, 2, 3, 1, 2, 3, 1, 2, 3])
        XCTAssertEqual(Array(corpus.validation), [1, 0, 4])
        XCTAssertEqual(try corpus.encode("cab\n"), [3, 1, 2, 0])
        XCTAssertEqual(corpus.decode([4, 1, 0]), "ßa\n")
        XCTAssertThrowsError(try corpus.encode("abz!z")) { error in
            XCTAssertEqual("\(error)", "characters not in the vocabulary of tiny: \"z\", \"!\"")
        }
    }

    /// Entropy of the training part's character frequencies, by hand: "aab" → −(⅔ ln ⅔ + ⅓ ln ⅓).
    func testUnigramEntropy() throws {
        let corpus = try TextCorpus(text: "aab", name: "t", validationFraction: 0)
        XCTAssertEqual(corpus.unigramEntropy, -(2.0 / 3 * log(2.0 / 3) + 1.0 / 3 * log(1.0 / 3)), accuracy: 1e-12)
        XCTAssertEqual(try TextCorpus(text: "aaaa", name: "t", validationFraction: 0).unigramEntropy, 0)
    }

    /// Batch k of every row continues where batch k − 1 stopped; targets are the inputs shifted by one.
    func testBatchesContinueEachRowForTruncatedBPTT() throws {
        let stream = (0..<23).map(Int32.init)
        let batches = try TextBatches(stream, batchSize: 2, sequenceLength: 3, name: "s")
        XCTAssertEqual(batches.rowLength, 11)   // (23 − 1) / 2
        XCTAssertEqual(batches.count, 3)
        let (inputs0, targets0) = batches.batch(0), (inputs1, targets1) = batches.batch(1)
        XCTAssertEqual(inputs0, [0, 1, 2, 11, 12, 13])
        XCTAssertEqual(targets0, [1, 2, 3, 12, 13, 14])
        XCTAssertEqual(inputs1, [3, 4, 5, 14, 15, 16])
        XCTAssertEqual(targets1, [4, 5, 6, 15, 16, 17])
        XCTAssertEqual(batches.batch(2).targets.last, 20)
    }

    func testBadTextsAreClearErrors() throws {
        let empty = try write([], to: "empty.txt")
        XCTAssertThrowsError(try TextCorpus.load(contentsOf: empty)) { error in
            XCTAssertEqual("\(error)", "\(empty.path): the text is empty")
        }
        let invalid = try write(Array("hello ".utf8) + [0xC3, 0x28] + Array(" world".utf8), to: "latin1.txt")
        XCTAssertThrowsError(try TextCorpus.load(contentsOf: invalid)) { error in
            XCTAssertEqual("\(error)", "\(invalid.path): not valid UTF-8 text (first bad byte at offset 6)")
        }
        let missing = directory.appendingPathComponent("missing.txt")
        XCTAssertThrowsError(try TextCorpus.load(contentsOf: missing)) { error in
            XCTAssertTrue("\(error)".contains(missing.path), "\(error)")
        }
        let short = try write(Array("to be or not".utf8), to: "short.txt")
        let corpus = try TextCorpus.load(contentsOf: short, validationFraction: 0.1)
        XCTAssertThrowsError(try TextBatches(corpus.training, batchSize: 4, sequenceLength: 8, name: corpus.name)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(short.path) && text.contains("too short") && text.contains("33"), text)
        }
        XCTAssertThrowsError(try TextBatches(corpus.training, batchSize: 1, sequenceLength: 0, name: corpus.name)) { error in
            XCTAssertTrue("\(error)".contains("sequence length must be positive, got 0"), "\(error)")
        }
        XCTAssertThrowsError(try TextCorpus(text: "abc", name: "t", validationFraction: 1))
    }

    func testGutenbergBoilerplateAndByteOrderMarkAreRemoved() throws {
        let text = "The Project Gutenberg EBook\r\nlicence\r\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\nACT I.\r\nWho's there?\r\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\r\nmore licence"
        let url = try write([0xEF, 0xBB, 0xBF] + Array(text.utf8), to: "gutenberg.txt")
        let corpus = try TextCorpus.load(contentsOf: url, validationFraction: 0)
        XCTAssertEqual(corpus.decode(corpus.ids), "ACT I.\nWho's there?\n")
        XCTAssertEqual(TextCorpus.strippingGutenbergBoilerplate("plain text"), "plain text\n")
    }

    /// The embedded plays: UTF-8 text of the expected size with the speakers' names.
    func testEmbeddedShakespeare() throws {
        let corpus = try Shakespeare.corpus()
        XCTAssertGreaterThan(corpus.ids.count, 200_000)
        XCTAssertEqual(corpus.vocabularySize, 73)
        let text = try Shakespeare.text()
        XCTAssertTrue(text.hasPrefix("ROMEO AND JULIET"))
        XCTAssertTrue(text.contains("MACBETH") && text.contains("Juliet."))
        XCTAssertEqual(corpus.unigramEntropy, 3.29, accuracy: 0.05)   // English letters: ≈ 4.1–4.2 bits
    }
}
