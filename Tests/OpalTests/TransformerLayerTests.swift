import Foundation
import XCTest
@testable import Opal

/// A Double reference of `torch.nn.MultiheadAttention(E, H, batch_first=True)` written from the
/// equations, with Opal's mask conventions (causal: key j ≤ i + Nk − Nq; key mask 0 = padding; a query
/// that sees no key gets zeros before the output projection).
private func referenceAttention(x: [Double], memory: [Double]?, batch: Int, queries: Int, keys: Int, modelSize: Int,
                                heads: Int, inWeight: [Double], inBias: [Double], outWeight: [Double], outBias: [Double],
                                causal: Bool, keyMask: [Int32]?) -> [Double] {
    let e = modelSize, d = modelSize / heads
    let source = memory ?? x
    func project(_ input: [Double], rows: Int, block: Int) -> [Double] {
        var result = [Double](repeating: 0, count: rows * e)
        for r in 0..<rows {
            for o in 0..<e {
                var sum = inBias[block * e + o]
                for k in 0..<e { sum += inWeight[(block * e + o) * e + k] * input[r * e + k] }
                result[r * e + o] = sum
            }
        }
        return result
    }
    let q = project(x, rows: batch * queries, block: 0)
    let k = project(source, rows: batch * keys, block: 1)
    let v = project(source, rows: batch * keys, block: 2)
    var attended = [Double](repeating: 0, count: batch * queries * e)
    for b in 0..<batch {
        for h in 0..<heads {
            for i in 0..<queries {
                var scores = [Double?](repeating: nil, count: keys)
                for j in 0..<keys {
                    if causal && j > i + keys - queries { continue }
                    if let keyMask, keyMask[b * keys + j] == 0 { continue }
                    var dot = 0.0
                    for c in 0..<d { dot += q[(b * queries + i) * e + h * d + c] * k[(b * keys + j) * e + h * d + c] }
                    scores[j] = dot / Double(d).squareRoot()
                }
                let visible = scores.compactMap { $0 }
                guard let peak = visible.max() else { continue }
                let total = visible.reduce(0) { $0 + Foundation.exp($1 - peak) }
                for j in 0..<keys {
                    guard let s = scores[j] else { continue }
                    let p = Foundation.exp(s - peak) / total
                    for c in 0..<d { attended[(b * queries + i) * e + h * d + c] += p * v[(b * keys + j) * e + h * d + c] }
                }
            }
        }
    }
    var output = [Double](repeating: 0, count: batch * queries * e)
    for r in 0..<(batch * queries) {
        for o in 0..<e {
            var sum = outBias[o]
            for c in 0..<e { sum += outWeight[o * e + c] * attended[r * e + c] }
            output[r * e + o] = sum
        }
    }
    return output
}

final class TransformerLayerTests: XCTestCase {
    private func freshSeed(_ name: String = #function) -> UInt64 {
        let seed = UInt64.random(in: 0...UInt64(UInt32.max))
        print("\(name): seed \(seed)")
        return seed
    }

    private var devices: [Device] {
        var result: [Device] = [.cpu]
        if !DeviceRegistry.shared.openCL.isEmpty, let device = try? Device.openCL(0) { result.append(device) }
        return result
    }

    private func random(_ count: Int, _ generator: inout SeededGenerator, scale: Double = 1) -> [Double] {
        (0..<count).map { _ in Double.random(in: -scale...scale, using: &generator) }
    }

    private func assertClose(_ actual: [Float], _ expected: [Double], tolerance: Double, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, message, file: file, line: line)
        let scale = max(1, expected.map(abs).max() ?? 1)
        var worst = 0.0
        for (a, e) in zip(actual, expected) { worst = max(worst, abs(Double(a) - e)) }
        if actual.contains(where: { !$0.isFinite }) { worst = .infinity }
        XCTAssertTrue(worst <= tolerance * scale, "\(message): largest difference \(worst) (scale \(scale))", file: file, line: line)
    }

    /// Self-attention (plain, causal, with a key mask that hides a whole row's keys) and cross-attention
    /// against the Double reference, on every device, at sizes that fit no tile (E 12, 3 heads of 4).
    func testMultiHeadAttentionMatchesADoubleReference() throws {
        let seed = freshSeed()
        var generator = SeededGenerator(seed: seed)
        let (batch, queries, keys, modelSize, heads) = (3, 5, 7, 12, 3)
        Random.seed(generator.next())
        let attention = try MultiHeadAttention(modelSize: modelSize, headCount: heads)
        // Non-zero biases so that every parameter matters.
        try attention.inputProjectionBias.assign(Tensor(random(3 * modelSize, &generator).map(Float.init), shape: [3 * modelSize], on: .cpu))
        try attention.outputProjection.bias!.assign(Tensor(random(modelSize, &generator).map(Float.init), shape: [modelSize], on: .cpu))
        let x = random(batch * queries * modelSize, &generator)
        let memory = random(batch * keys * modelSize, &generator)
        var selfMask = [Int32](repeating: 1, count: batch * queries)
        for i in 0..<queries { selfMask[i] = 0 }                 // batch 0: every key padded
        selfMask[queries + 2] = 0                                 // batch 1: one key padded
        var crossMask = [Int32](repeating: 1, count: batch * keys)
        crossMask[2 * keys + keys - 1] = 0
        let parameters = try [attention.inputProjectionWeight, attention.inputProjectionBias, attention.outputProjection.weight,
                              attention.outputProjection.bias!].map { try $0.value.scalars().map(Double.init) }
        for device in devices {
            try attention.move(to: device)
            let input = try Tensor(x.map(Float.init), shape: [batch, queries, modelSize], on: device)
            for (causal, mask) in [(false, nil), (true, nil), (false, selfMask), (true, selfMask)] as [(Bool, [Int32]?)] {
                let expected = referenceAttention(x: x, memory: nil, batch: batch, queries: queries, keys: queries,
                                                  modelSize: modelSize, heads: heads, inWeight: parameters[0], inBias: parameters[1],
                                                  outWeight: parameters[2], outBias: parameters[3], causal: causal, keyMask: mask)
                let keyMask = try mask.map { try Tensor($0, shape: [batch, queries], on: device) }
                let output = try attention(input, keyMask: keyMask, causal: causal)
                assertClose(try output.scalars(), expected, tolerance: 2e-5,
                            "self-attention causal \(causal) mask \(mask != nil) on \(device.name), seed \(seed)")
            }
            let expected = referenceAttention(x: x, memory: memory, batch: batch, queries: queries, keys: keys,
                                              modelSize: modelSize, heads: heads, inWeight: parameters[0], inBias: parameters[1],
                                              outWeight: parameters[2], outBias: parameters[3], causal: false, keyMask: crossMask)
            let output = try attention(input, memory: Tensor(memory.map(Float.init), shape: [batch, keys, modelSize], on: device),
                                       keyMask: Tensor(crossMask, shape: [batch, keys], on: device))
            assertClose(try output.scalars(), expected, tolerance: 2e-5, "cross-attention on \(device.name), seed \(seed)")
        }
    }

    /// The gradients of a decoder block (self- and cross-attention with masks, layer norms, GELU MLP)
    /// w.r.t. its input, its memory and a sample of its parameters, against central differences of the
    /// Float forward pass, on every device.
    func testTransformerBlockGradientsMatchFiniteDifferences() throws {
        let seed = freshSeed()
        var generator = SeededGenerator(seed: seed)
        let (batch, length, memoryLength, modelSize) = (2, 3, 4, 8)
        Random.seed(generator.next())
        let block = try TransformerBlock(modelSize: modelSize, headCount: 2, feedForwardSize: 12, causal: true, crossAttention: true)
        for norm in [block.norm1, block.norm2, block.crossNorm!] {
            try norm.weight.assign(Tensor(random(modelSize, &generator).map { Float(1 + 0.5 * $0) }, shape: [modelSize], on: .cpu))
            try norm.bias.assign(Tensor(random(modelSize, &generator, scale: 0.5).map(Float.init), shape: [modelSize], on: .cpu))
        }
        let x = random(batch * length * modelSize, &generator)
        let memory = random(batch * memoryLength * modelSize, &generator)
        let weights = random(batch * length * modelSize, &generator)
        let memoryMask: [Int32] = [1, 1, 0, 1, 1, 0, 0, 1]
        for device in devices {
            try block.move(to: device)
            let weightTensor = try Tensor(weights.map(Float.init), shape: [batch, length, modelSize], on: device)
            let mask = try Tensor(memoryMask, shape: [batch, memoryLength], on: device)
            func loss(_ input: Tensor, _ memoryTensor: Tensor) throws -> Tensor {
                try (block(input, memory: memoryTensor, memoryMask: mask) * weightTensor).sum()
            }
            let input = try Tensor(x.map(Float.init), shape: [batch, length, modelSize], on: device).requiringGradient()
            let memoryTensor = try Tensor(memory.map(Float.init), shape: [batch, memoryLength, modelSize], on: device).requiringGradient()
            block.zeroGradients()
            try loss(input, memoryTensor).backward()
            // Probes: (name, analytic gradient values, function that sets element i to a value and restores).
            var probes: [(String, [Float], [Float], (Int, Float) throws -> Void)] = []
            var xValues = x.map(Float.init), memoryValues = memory.map(Float.init)
            probes.append(("input", try input.gradient!.scalars(), xValues, { xValues[$0] = $1 }))
            probes.append(("memory", try memoryTensor.gradient!.scalars(), memoryValues, { memoryValues[$0] = $1 }))
            for (name, parameter) in block.namedParameters {
                let values = try parameter.value.scalars()
                guard let gradient = try parameter.gradient?.scalars() else { XCTFail("\(name) has no gradient on \(device.name)"); continue }
                probes.append((name, gradient, values, { index, value in
                    var updated = values; updated[index] = value
                    try parameter.assign(Tensor(updated, shape: parameter.shape, on: device))
                }))
            }
            func objective() throws -> Double {
                try withoutGradients {
                    Double(try loss(Tensor(xValues, shape: [batch, length, modelSize], on: device),
                                    Tensor(memoryValues, shape: [batch, memoryLength, modelSize], on: device)).item())
                }
            }
            let epsilon: Float = 1e-2
            for (name, gradient, original, set) in probes {
                // Three elements per tensor, chosen at random.
                for _ in 0..<3 {
                    let i = Int.random(in: 0..<original.count, using: &generator)
                    try set(i, original[i] + epsilon); let plus = try objective()
                    try set(i, original[i] - epsilon); let minus = try objective()
                    try set(i, original[i])
                    let numeric = (plus - minus) / Double(2 * epsilon)
                    let tolerance = 2e-2 * max(1, abs(numeric))
                    XCTAssertEqual(Double(gradient[i]), numeric, accuracy: tolerance,
                                   "d loss / d \(name)[\(i)] on \(device.name), seed \(seed)")
                }
            }
        }
    }

    /// Decoding step by step with the key/value caches gives the logits of one full forward pass, on
    /// every device; and a sequence longer than the context is a clear error.
    func testGPTCachedDecodingMatchesTheFullForwardPass() throws {
        let seed = freshSeed()
        var generator = SeededGenerator(seed: seed)
        Random.seed(generator.next())
        let model = try GPT(GPT.Configuration(vocabularySize: 11, contextLength: 9, modelSize: 16, headCount: 4, blockCount: 2))
        let ids = (0..<7).map { _ in Int32.random(in: 0..<11, using: &generator) }
        for device in devices {
            try model.move(to: device)
            model.setTraining(false)
            try withoutGradients {
                let full = try model(Tensor(ids, shape: [1, 7], on: device)).scalars()
                let caches = model.makeCaches()
                var stepwise = try model(Tensor(Array(ids.prefix(3)), shape: [1, 3], on: device), caches: caches).scalars()
                for id in ids.dropFirst(3) {
                    stepwise += try model(Tensor([id], shape: [1, 1], on: device), caches: caches).scalars()
                }
                XCTAssertEqual(caches[0].length, 7)
                assertClose(stepwise, full.map(Double.init), tolerance: 1e-5, "cached vs full logits on \(device.name), seed \(seed)")
                XCTAssertThrowsError(try model(Tensor([Int32](repeating: 1, count: 3), shape: [1, 3], on: device), caches: caches)) {
                    XCTAssertTrue("\($0)".contains("longer than the context of 9"), "\($0)")
                }
            }
        }
        // Sampling past the context rebuilds the cache and goes on.
        let vocabulary = (0..<11).map { Unicode.Scalar(UInt8(97 + $0)) }
        var emitted = 0
        let calls = try model.generate(vocabulary: vocabulary, prompt: "abc", length: 20, temperature: 1, seed: 3, on: .cpu) { _ in emitted += 1 }
        XCTAssertEqual(emitted, 20)
        XCTAssertLessThan(calls, 20 + 6, "each character should cost one cached step, with a few re-reads of half the context")
    }

    /// Fused and composed attention agree in value and gradient on every device (B 2, H 3, Nq 5, Nk 9, D 7).
    func testFusedAttentionMatchesTheComposedReference() throws {
        let seed = freshSeed()
        var generator = SeededGenerator(seed: seed)
        let (b, h, nq, nk, d) = (2, 3, 5, 9, 7)
        let q = random(b * h * nq * d, &generator), k = random(b * h * nk * d, &generator), v = random(b * h * nk * d, &generator)
        let upstream = random(b * h * nq * d, &generator)
        let maskValues: [Int32] = [1, 0, 1, 1, 1, 1, 1, 0, 1] + [0, 0, 0, 0, 0, 0, 0, 0, 1]
        for device in devices {
            for (causal, masked) in [(false, false), (true, false), (false, true), (true, true)] {
                var results: [[[Float]]] = []
                for fused in [true, false] {
                    let query = try Tensor(q.map(Float.init), shape: [b, h, nq, d], on: device).requiringGradient()
                    let key = try Tensor(k.map(Float.init), shape: [b, h, nk, d], on: device).requiringGradient()
                    let value = try Tensor(v.map(Float.init), shape: [b, h, nk, d], on: device).requiringGradient()
                    let mask = masked ? try Tensor(maskValues, shape: [b, nk], on: device) : nil
                    let output = fused
                        ? try Tensor.scaledDotProductAttention(query: query, key: key, value: value, keyMask: mask, causal: causal)
                        : try Tensor.scaledDotProductAttentionComposed(query: query, key: key, value: value, keyMask: mask, causal: causal)
                    try (output * Tensor(upstream.map(Float.init), shape: [b, h, nq, d], on: device)).sum().backward()
                    results.append([try output.scalars(), try query.gradient!.scalars(), try key.gradient!.scalars(),
                                    try value.gradient!.scalars()])
                }
                for (index, name) in ["output", "dQ", "dK", "dV"].enumerated() {
                    assertClose(results[0][index], results[1][index].map(Double.init), tolerance: 1e-5,
                                "\(name) fused vs composed, causal \(causal) masked \(masked) on \(device.name), seed \(seed)")
                }
            }
        }
    }

    /// LayerNorm (fused) matches the composed form in value and gradient on every device, also for
    /// rows with a large common offset.
    func testLayerNormMatchesTheComposedFormWithGradients() throws {
        let seed = freshSeed()
        var generator = SeededGenerator(seed: seed)
        let (rows, columns) = (6, 37)
        let x = random(rows * columns, &generator).enumerated().map { $0.offset < columns ? 300 + $0.element : $0.element }
        let gamma = random(columns, &generator).map { 1 + 0.3 * $0 }, beta = random(columns, &generator)
        let upstream = random(rows * columns, &generator)
        for device in devices {
            var results: [[[Float]]] = []
            for fused in [true, false] {
                let input = try Tensor(x.map(Float.init), shape: [2, 3, columns], on: device).requiringGradient()
                let g = try Tensor(gamma.map(Float.init), shape: [columns], on: device).requiringGradient()
                let bb = try Tensor(beta.map(Float.init), shape: [columns], on: device).requiringGradient()
                let y = fused ? try input.layerNormalized(gamma: g, beta: bb) : try input.layerNormalizedComposed(gamma: g, beta: bb)
                try (y * Tensor(upstream.map(Float.init), shape: [2, 3, columns], on: device)).sum().backward()
                results.append([try y.scalars(), try input.gradient!.scalars(), try g.gradient!.scalars(), try bb.gradient!.scalars()])
            }
            for (index, name) in ["y", "dx", "dgamma", "dbeta"].enumerated() {
                assertClose(results[0][index], results[1][index].map(Double.init), tolerance: 2e-4,
                            "layer norm \(name) fused vs composed on \(device.name), seed \(seed)")
            }
        }
    }

    /// Bad configurations and inputs are errors that name the problem.
    func testBadInputsAreClearErrors() throws {
        func expect(_ text: String, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { XCTAssertTrue("\($0)".contains(text), "\"\($0)\" should mention \"\(text)\"", line: line) }
        }
        expect("3 heads do not divide the model width 16") { _ = try MultiHeadAttention(modelSize: 16, headCount: 3) }
        expect("head dimension 256 exceeds 128") { _ = try MultiHeadAttention(modelSize: 256, headCount: 1) }
        let attention = try MultiHeadAttention(modelSize: 8, headCount: 2)
        let x = try Tensor.zeros([2, 5, 8], on: .cpu)
        expect("[batch, length ≥ 1, 8]") { _ = try attention(Tensor.zeros([2, 5, 6], on: .cpu)) }
        expect("key mask [batch, keys] = [2, 5]") { _ = try attention(x, keyMask: Tensor([Int32](repeating: 1, count: 8), shape: [2, 4], on: .cpu)) }
        expect("key mask") { _ = try attention(x, keyMask: Tensor.ones([2, 5], on: .cpu)) }
        let gpt = try GPT(GPT.Configuration(vocabularySize: 5, contextLength: 4, modelSize: 8, headCount: 2, blockCount: 1))
        expect("longer than the context of 4") { _ = try gpt(Tensor([Int32](repeating: 0, count: 5), shape: [1, 5], on: .cpu)) }
        expect("outside the vocabulary") { _ = try gpt.indices([0, 7], shape: [1, 2], on: .cpu) }
        expect("causal attention needs at least as many keys") {
            _ = try Tensor.scaledDotProductAttention(query: Tensor.zeros([1, 1, 3, 4], on: .cpu), key: Tensor.zeros([1, 1, 2, 4], on: .cpu),
                                                     value: Tensor.zeros([1, 1, 2, 4], on: .cpu), causal: true)
        }
        expect("value must have the key's shape") {
            _ = try Tensor.scaledDotProductAttention(query: Tensor.zeros([1, 1, 3, 4], on: .cpu), key: Tensor.zeros([1, 1, 2, 4], on: .cpu),
                                                     value: Tensor.zeros([1, 1, 3, 4], on: .cpu))
        }
        expect("patches of 5×5 do not tile 28×28") { _ = try VisionTransformer(imageShape: [1, 28, 28], patchSize: 5, classes: 10) }
        expect("gamma [features]") { _ = try x.layerNormalized(gamma: Tensor.ones([7], on: .cpu), beta: Tensor.zeros([8], on: .cpu)) }
    }

    /// The vision transformer cuts images into row-major patches, each flattened channel-major.
    func testVisionTransformerPatchesAreRowMajorAndChannelMajor() throws {
        let model = try VisionTransformer(imageShape: [2, 4, 6], patchSize: 2, modelSize: 8, headCount: 2, blockCount: 1, classes: 3)
        let values = (0..<(2 * 4 * 6)).map(Float.init)
        let patches = try model.patches(Tensor(values, shape: [1, 2, 4, 6], on: .cpu))
        XCTAssertEqual(patches.shape, [1, 6, 8])
        let p = try patches.scalars()
        // Patch 4 = row 1, column 1 → pixels (y 2…3, x 2…3) of channel 0, then channel 1.
        XCTAssertEqual(Array(p[(4 * 8)..<(5 * 8)]), [14, 15, 20, 21, 38, 39, 44, 45])
        XCTAssertEqual(try model(Tensor(values, shape: [1, 2, 4, 6], on: .cpu)).shape, [1, 3])
    }
}
