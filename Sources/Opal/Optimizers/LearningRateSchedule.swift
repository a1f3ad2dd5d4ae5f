import Foundation

/// The learning rate as a function of the step: computed on the host and handed to the optimizer
/// before each step (nothing is read from the device).
public enum LearningRateSchedule: String, Sendable, CaseIterable {
    /// The base rate throughout.
    case constant
    /// Cosine decay from the base rate to zero over the run: `base · ½(1 + cos(π·t/T))`.
    case cosine

    /// The rate at `step` (0-based) of `total` steps.
    public func rate(base: Float, step: Int, of total: Int) -> Float {
        switch self {
        case .constant:
            return base
        case .cosine:
            guard total > 1 else { return base }
            let progress = Double(min(max(step, 0), total - 1)) / Double(total)
            return base * Float(0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}
