/// Evaluation metrics on host arrays (read predictions back once per evaluation, not per step).
public enum Metrics {
    /// Share of `predictions` equal to `labels`.
    public static func accuracy(predictions: [Int32], labels: [Int32]) -> Double {
        guard !labels.isEmpty else { return 0 }
        return Double(zip(predictions, labels).filter { $0 == $1 }.count) / Double(labels.count)
    }

    /// `matrix[true][predicted]` counts.
    public static func confusionMatrix(predictions: [Int32], labels: [Int32], classCount: Int) -> [[Int]] {
        var matrix = [[Int]](repeating: [Int](repeating: 0, count: classCount), count: classCount)
        for (predicted, actual) in zip(predictions, labels)
        where (0..<classCount).contains(Int(actual)) && (0..<classCount).contains(Int(predicted)) {
            matrix[Int(actual)][Int(predicted)] += 1
        }
        return matrix
    }

    public struct ClassificationReport: Sendable {
        public var accuracy: Double
        public var macroPrecision: Double, macroRecall: Double, macroF1: Double
        public var perClassF1: [Double]
    }

    /// Accuracy and macro-averaged precision, recall and F1 (a class with no predictions has
    /// precision 0, as scikit-learn's `zero_division=0`).
    public static func classificationReport(predictions: [Int32], labels: [Int32], classCount: Int) -> ClassificationReport {
        let matrix = confusionMatrix(predictions: predictions, labels: labels, classCount: classCount)
        var precisions: [Double] = [], recalls: [Double] = [], f1s: [Double] = []
        for c in 0..<classCount {
            let truePositives = Double(matrix[c][c])
            let predicted = Double((0..<classCount).map { matrix[$0][c] }.reduce(0, +))
            let actual = Double(matrix[c].reduce(0, +))
            let precision = predicted > 0 ? truePositives / predicted : 0
            let recall = actual > 0 ? truePositives / actual : 0
            precisions.append(precision); recalls.append(recall)
            f1s.append(precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0)
        }
        let mean = { (values: [Double]) in values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count) }
        return ClassificationReport(accuracy: accuracy(predictions: predictions, labels: labels),
                                    macroPrecision: mean(precisions), macroRecall: mean(recalls),
                                    macroF1: mean(f1s), perClassF1: f1s)
    }

    /// Mean absolute error.
    public static func meanAbsoluteError(_ predictions: [Float], _ targets: [Float]) -> Double {
        guard !targets.isEmpty else { return 0 }
        return zip(predictions, targets).map { Double(abs($0 - $1)) }.reduce(0, +) / Double(targets.count)
    }

    /// Mean squared error.
    public static func meanSquaredError(_ predictions: [Float], _ targets: [Float]) -> Double {
        guard !targets.isEmpty else { return 0 }
        return zip(predictions, targets).map { Double(($0 - $1) * ($0 - $1)) }.reduce(0, +) / Double(targets.count)
    }
}
