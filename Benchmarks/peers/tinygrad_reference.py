#!/usr/bin/env python3
"""tinygrad reference timings for Opal's reference training steps R1–R6.

The same models, shapes, losses and optimisers as `pytorch_reference.py` (and Opal's `TrainingStepBenchmark`
and `RecurrentStepBenchmark`), written with tinygrad's own layers, so that Opal's step time on an OpenCL
device can be read against tinygrad's OpenCL backend on the same device (issue #6: on PoCL, every R1–R6 step
should be at least 2× faster in Opal than in tinygrad's `CL` device).

* R1 MLP 784-512-512-10 ReLU, cross-entropy, Adam 1e-3, batch 128.
* R2 CNN: Conv 1→32 3×3 p1, ReLU, MaxPool 2; Conv 32→64 3×3 p1, ReLU, MaxPool 2; Linear 3136→128, ReLU;
  Linear 128→10; cross-entropy, Adam 1e-3, batch 64.
* R3 char LSTM LM: Embedding 65×64 → LSTM 64→256 (tinygrad's `nn.LSTMCell` unrolled over 64 steps, zero
  initial state) → Linear 256→65 at every step; mean cross-entropy, Adam 2e-3, batch 32 of 64 ids.
* R4 dense autoencoder 784-256-32-256-784 (ReLU, Sigmoid output), MSE against the input, Adam 1e-3, batch 128.
* R5 DCGAN-small, one D update (real against 1, a batch generated without gradients against 0) and one G
  update (D(G(z)) against 1, only G's parameters updated), BCE with logits, Adam 2e-4 β = (0.5, 0.999), batch 64.
* R6 GPT: vocabulary 65, context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4× GELU (tanh), causal
  scaled-dot-product attention, cross-entropy, Adam 1e-3, batch 32.

Each step is one `TinyJit`-compiled function (forward, loss, backward, optimiser update, all realised), the
way tinygrad's own training examples run; the data is already on the device. Timing: `--warmup` untimed
steps (the JIT captures on the second call; the first calls also compile every kernel, which can take minutes
on PoCL), then `--steps` timed steps, each ended by the device's `synchronize()`; the median, p10 and p90 of the
per-step wall-clock times in milliseconds. tinygrad caches compiled kernels on disk, so a second run starts
faster.

Examples:
    pip install tinygrad
    python3 tinygrad_reference.py                          # R1 on tinygrad's CL device (PoCL here), a table
    python3 tinygrad_reference.py --workloads R1,R2,R3,R4,R5,R6 --json
    python3 tinygrad_reference.py --device CPU --workloads R6 --steps 10
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time
import traceback

from peer_timing import percentile  # this folder's shared timing helper


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="CL",
                        help="tinygrad device: CL (OpenCL, e.g. PoCL), CL:1, CPU, … (default CL)")
    parser.add_argument("--workloads", default="R1", help="comma-separated: R1,R2,R3,R4,R5,R6 (default R1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (at least 3: the JIT captures on the second)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per workload")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop timing a workload after this many seconds of timed steps (at least 3 steps)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up on a workload (reported as an error) after this many seconds, warm-up included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser.parse_args(argv)


ARGS = parse_arguments() if __name__ == "__main__" else None
if ARGS is not None:
    # tinygrad picks its default device from the environment when it is imported.
    os.environ["DEV"] = ARGS.device
    os.environ.setdefault("TRAINING", "1")

from tinygrad import Device, Tensor, TinyJit, dtypes, nn  # noqa: E402
from tinygrad.nn.state import get_parameters  # noqa: E402


def adam(parameters, lr=1e-3, b1=0.9, b2=0.999):
    return nn.optim.Adam(parameters, lr=lr, b1=b1, b2=b2)


def supervised(model_call, parameters, inputs, loss_fn, lr=1e-3):
    """One JIT-compiled step of `loss_fn(model_call(inputs))` with Adam."""
    optimizer = adam(parameters, lr)

    @TinyJit
    def step():
        optimizer.zero_grad()
        loss = loss_fn(model_call(inputs))
        loss.backward()
        return loss.realize(*optimizer.schedule_step())
    return step


class MLP:
    def __init__(self):
        self.layers = [nn.Linear(784, 512), nn.Linear(512, 512), nn.Linear(512, 10)]

    def __call__(self, x):
        x = self.layers[0](x).relu()
        x = self.layers[1](x).relu()
        return self.layers[2](x)


def build_r1():
    batch = 128
    model = MLP()
    inputs = Tensor.rand(batch, 784).realize()
    labels = Tensor.randint(batch, low=0, high=10).realize()
    return supervised(model, get_parameters(model), inputs, lambda logits: logits.sparse_categorical_crossentropy(labels))


class CNN:
    def __init__(self):
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(3136, 128), nn.Linear(128, 10)

    def __call__(self, x):
        x = self.conv1(x).relu().max_pool2d(2)
        x = self.conv2(x).relu().max_pool2d(2)
        return self.fc2(self.fc1(x.flatten(1)).relu())


def build_r2():
    batch = 64
    model = CNN()
    inputs = Tensor.rand(batch, 1, 28, 28).realize()
    labels = Tensor.randint(batch, low=0, high=10).realize()
    return supervised(model, get_parameters(model), inputs, lambda logits: logits.sparse_categorical_crossentropy(labels))


class CharLanguageModel:
    """Embedding V×E → LSTM E→H (nn.LSTMCell over every step, zero initial state) → Linear H→V at every step."""

    def __init__(self, vocabulary=65, embedding=64, hidden=256):
        self.embedding = nn.Embedding(vocabulary, embedding)
        self.cell = nn.LSTMCell(embedding, hidden)
        self.output = nn.Linear(hidden, vocabulary)

    def __call__(self, ids):
        x = self.embedding(ids)
        state, outputs = None, []
        for t in range(ids.shape[1]):
            state = self.cell(x[:, t], state)
            outputs.append(state[0])
        return self.output(Tensor.stack(*outputs, dim=1))


def build_r3():
    batch, seq, vocabulary = 32, 64, 65
    model = CharLanguageModel(vocabulary)
    ids = Tensor.randint(batch, seq + 1, low=0, high=vocabulary).realize()
    inputs, targets = ids[:, :-1].contiguous().realize(), ids[:, 1:].contiguous().realize()
    return supervised(model, get_parameters(model), inputs,
                      lambda logits: logits.reshape(-1, vocabulary).sparse_categorical_crossentropy(targets.reshape(-1)),
                      lr=2e-3)


class Autoencoder:
    def __init__(self):
        self.e1, self.e2 = nn.Linear(784, 256), nn.Linear(256, 32)
        self.d1, self.d2 = nn.Linear(32, 256), nn.Linear(256, 784)

    def __call__(self, x):
        code = self.e2(self.e1(x.flatten(1)).relu())
        return self.d2(self.d1(code).relu()).sigmoid().reshape(x.shape)


def build_r4():
    batch = 128
    model = Autoencoder()
    images = Tensor.rand(batch, 1, 28, 28).realize()
    return supervised(model, get_parameters(model), images, lambda output: ((output - images) ** 2).mean())


class Generator:
    def __init__(self, noise=100):
        self.linear = nn.Linear(noise, 128 * 7 * 7, bias=False)
        self.bn1 = nn.BatchNorm(128 * 7 * 7)
        self.deconv1 = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm(64)
        self.deconv2 = nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1)

    def __call__(self, z):
        x = self.bn1(self.linear(z)).relu().reshape(-1, 128, 7, 7)
        x = self.bn2(self.deconv1(x)).relu()
        return self.deconv2(x).tanh()


class Discriminator:
    def __init__(self):
        self.conv1 = nn.Conv2d(1, 64, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 4, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm(128)
        self.linear = nn.Linear(128 * 7 * 7, 1)

    def __call__(self, x):
        x = self.conv1(x).leaky_relu(0.2)
        x = self.bn(self.conv2(x)).leaky_relu(0.2)
        return self.linear(x.flatten(1))


def build_r5():
    batch, noise = 64, 100
    generator, discriminator = Generator(noise), Discriminator()
    g_parameters, d_parameters = get_parameters(generator), get_parameters(discriminator)
    g_optimizer = adam(g_parameters, 2e-4, b1=0.5)
    d_optimizer = adam(d_parameters, 2e-4, b1=0.5)
    images = Tensor.rand(batch, 1, 28, 28).realize()
    ones, zeros = Tensor.ones(batch, 1).contiguous().realize(), Tensor.zeros(batch, 1).contiguous().realize()

    @TinyJit
    def step():
        real = images * 2 - 1
        d_optimizer.zero_grad()
        fake = generator(Tensor.randn(batch, noise)).detach()
        d_loss = discriminator(real).binary_crossentropy_logits(ones) + discriminator(fake).binary_crossentropy_logits(zeros)
        d_loss.backward()
        Tensor.realize(d_loss, *d_optimizer.schedule_step())
        # G update: D's weights are not stepped (only G's optimiser steps); their gradients are dropped.
        g_optimizer.zero_grad()
        d_optimizer.zero_grad()
        g_loss = discriminator(generator(Tensor.randn(batch, noise))).binary_crossentropy_logits(ones)
        g_loss.backward()
        return g_loss.realize(*g_optimizer.schedule_step())
    return step


class Block:
    """Pre-LN Transformer block: causal multi-head self-attention and an MLP 4× with GELU (tanh)."""

    def __init__(self, width, heads):
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.projection = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def attention(self, x):
        batch, steps, width = x.shape
        q, k, v = [t.reshape(batch, steps, self.heads, width // self.heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=2)]
        y = q.scaled_dot_product_attention(k, v, is_causal=True)
        return self.projection(y.transpose(1, 2).reshape(batch, steps, width))

    def __call__(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.fc2(self.fc1(self.ln2(x)).gelu())


class GPT:
    def __init__(self, vocabulary=65, context=64, width=128, heads=4, blocks=2):
        self.token_embedding, self.position_embedding = nn.Embedding(vocabulary, width), nn.Embedding(context, width)
        self.blocks = [Block(width, heads) for _ in range(blocks)]
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocabulary)
        self.positions = Tensor.arange(context).reshape(1, context).realize().is_param_(False)  # ids, not trained

    def __call__(self, ids):
        x = self.token_embedding(ids) + self.position_embedding(self.positions[:, :ids.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_r6():
    batch, seq, vocabulary = 32, 64, 65
    model = GPT(vocabulary, seq)
    ids = Tensor.randint(batch, seq + 1, low=0, high=vocabulary).realize()
    inputs, targets = ids[:, :-1].contiguous().realize(), ids[:, 1:].contiguous().realize()
    return supervised(model, get_parameters(model), inputs,
                      lambda logits: logits.reshape(-1, vocabulary).sparse_categorical_crossentropy(targets.reshape(-1)))


WORKLOADS = {
    "R1": ("MLP 784-512-512-10 ReLU, cross-entropy, Adam 1e-3, batch 128", build_r1),
    "R2": ("CNN conv 32, conv 64, linear 3136-128-10, cross-entropy, Adam 1e-3, batch 64", build_r2),
    "R3": ("char LSTM LM: Embedding 65x64, LSTMCell 64-256 unrolled over 64 steps, Linear 256-65, cross-entropy, "
           "Adam 2e-3, batch 32", build_r3),
    "R4": ("dense autoencoder 784-256-32-256-784, MSE, Adam 1e-3, batch 128", build_r4),
    "R5": ("DCGAN-small, one D + one G update, BCE with logits, Adam 2e-4 (0.5, 0.999), batch 64", build_r5),
    "R6": ("GPT vocab 65, context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4x GELU, cross-entropy, Adam 1e-3, "
           "batch 32", build_r6),
}


def device_description():
    device = Device[Device.DEFAULT]
    name = getattr(device, "device_name", None)
    driver = getattr(device, "driver_version", None)
    return Device.DEFAULT + (f": {name}" if name else "") + (f" ({driver})" if driver else "")


def time_workload(name, warmup, steps, max_seconds):
    description, build = WORKLOADS[name]
    synchronize = Device[Device.DEFAULT].synchronize
    started = time.perf_counter()
    step = build()
    for _ in range(max(warmup, 3)):
        step()
    synchronize()
    warmup_seconds = time.perf_counter() - started
    times_ms = []
    timing_started = time.perf_counter()
    while len(times_ms) < steps:
        start = time.perf_counter()
        step()
        synchronize()
        times_ms.append((time.perf_counter() - start) * 1000)
        if len(times_ms) >= 3 and time.perf_counter() - timing_started > max_seconds:
            break
    times_ms.sort()
    return {
        "description": description,
        "median_ms": statistics.median(times_ms),
        "p10_ms": percentile(times_ms, 0.10),
        "p90_ms": percentile(times_ms, 0.90),
        "steps": len(times_ms),
        "warmup_s": warmup_seconds,
        "device": device_description(),
        "tinygrad": tinygrad_version(),
    }


def tinygrad_version():
    try:
        from importlib.metadata import version
        return version("tinygrad")
    except Exception:  # noqa: BLE001 (a source checkout has no metadata)
        return "unknown"


class WorkloadTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise WorkloadTimeout()


def main(args) -> int:
    names = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        print(f"error: unknown workload(s) {unknown}; known: {list(WORKLOADS)}", file=sys.stderr)
        return 2
    if args.steps <= 0 or args.warmup < 0:
        print(f"error: --steps must be positive and --warmup not negative, got {args.steps} and {args.warmup}",
              file=sys.stderr)
        return 2
    Tensor.manual_seed(args.seed)
    signal.signal(signal.SIGALRM, on_alarm)
    report = {}
    for name in names:
        print(f"{name} on {Device.DEFAULT} (warm-up compiles the kernels; this can take minutes)…", file=sys.stderr)
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            report[name] = time_workload(name, args.warmup, args.steps, args.max_seconds)
        except WorkloadTimeout:
            report[name] = {"error": f"did not finish within --timeout {args.timeout:.0f} s (kernel compilation and "
                                     f"warm-up included)", "device": Device.DEFAULT, "tinygrad": tinygrad_version()}
        except Exception as error:  # noqa: BLE001 (a workload tinygrad cannot run is reported, not fatal)
            where = traceback.extract_tb(error.__traceback__)[-1]
            report[name] = {"error": f"{type(error).__name__}: {error} (at {os.path.basename(where.filename)}:"
                                     f"{where.lineno} {where.line})"[:500], "device": Device.DEFAULT,
                            "tinygrad": tinygrad_version()}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        r = report[name]
        print(f"  {name}: " + (r["error"] if "error" in r else f"median {r['median_ms']:.3f} ms over {r['steps']} steps")
              + f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name in names:
        r = report[name]
        if "error" in r:
            print(f"{name}: tinygrad could not run it: {r['error']}")
            continue
        print(f"{name} ({r['description']}) on {r['device']}, tinygrad {r['tinygrad']}: median {r['median_ms']:.3f} ms  "
              f"p10 {r['p10_ms']:.3f}  p90 {r['p90_ms']:.3f}  ({r['steps']} steps; warm-up {r['warmup_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
