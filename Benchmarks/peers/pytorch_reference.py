#!/usr/bin/env python3
"""PyTorch reference timings for Opal's benchmark suite.

Measures the same workloads as `opal bench` so Opal's numbers can be read against a mature framework
on the same machine:

* training steps (R1 MLP, R2 CNN, R4 dense autoencoder, R5 DCGAN, R6 GPT): forward, loss, backward and optimizer
  update of one batch (R5: one discriminator and one generator update), with the data already on the device;
  warm-up steps, then the median (and p10/p90) of many timed steps;
* recurrent layers (K4 LSTM, K5 GRU): torch.nn.LSTM / torch.nn.GRU (one layer, batch first), forward over
  the whole sequence, sum of the outputs, backward (gradients of the weights and of the input); and R3, the
  character LSTM language model's training step. --batch/--seq/--input-size/--hidden change their shapes;
* attention (K3): torch.nn.functional.scaled_dot_product_attention, causal, fp32, Q/K/V [B, H, N, D]
  (B 8, H 8, D 64, N 1024; --batch/--seq/--heads/--head-dim change it), forward, sum of the output, backward
  (gradients of Q, K and V);
* GEMM (--gemm): C = A·B for square fp32 matrices, in ms and GFLOP/s;
* convolution (K2, `--workloads K2`): F.conv2d forward, backward-data and backward-weight (torch.nn.grad.conv2d_input /
  conv2d_weight, the passes autograd runs) at the two K2 shapes, N32 C64 56×56→64 3×3 p1 and N32 C3 224×224→64 7×7 s2
  p3 (--batch changes N), each pass timed alone, in ms and GFLOP/s.

Settings that must match Opal's: fp32 everywhere, TF32 off, data resident on the device, a fixed seed.
On CUDA each step ends with torch.cuda.synchronize() so the time covers the whole step.

Examples:
    python3 pytorch_reference.py                       # R1 on the CPU with 2 threads
    python3 pytorch_reference.py --workloads R1,R2,R4,R5  # every training workload
    python3 pytorch_reference.py --device cuda --json  # R1 on the GPU, JSON on stdout
    python3 pytorch_reference.py --gemm --threads 2    # GEMM 256…2048
    python3 pytorch_reference.py --workloads K4,K5 --warmup 2 --steps 5   # LSTM / GRU layer fwd + bwd
    python3 pytorch_reference.py --workloads K3 --seq 4096 --steps 5      # causal attention fwd + bwd
    python3 pytorch_reference.py --workloads K2 --warmup 2 --steps 5      # conv2d fwd, bwd-data, bwd-weight
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from peer_timing import percentile  # this folder's shared timing helper


@dataclass
class Workload:
    """One training-step benchmark: a builder that puts a model, a batch and optimizers on the device."""
    description: str
    # (device, **shape) -> step, a function doing one full training step (forward, loss, backward, update)
    build: Callable[..., Callable[[], object]]
    # The shape overrides (--batch, --seq, --input-size, --hidden) the builder accepts, with their defaults.
    shape: Dict[str, int] = field(default_factory=dict)


def supervised_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn, optimizer):
    """One step of `loss_fn(model(inputs), targets)` with `optimizer`."""
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss
    return step


def build_r1(device: torch.device):
    """R1: MLP 784-512-512-10 with ReLU, cross-entropy, Adam lr 1e-3, batch 128 (Fashion-MNIST shaped)."""
    batch = 128
    model = nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    ).to(device)
    inputs = torch.rand(batch, 784, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return supervised_step(model, inputs, targets, F.cross_entropy, optimizer)


def build_r2(device: torch.device):
    """R2: CNN (Opal's `CNN.simple()`): Conv 1→32 3×3 p1, ReLU, MaxPool 2; Conv 32→64 3×3 p1, ReLU, MaxPool 2;
    Linear 3136→128, ReLU; Linear 128→10; cross-entropy, Adam lr 1e-3, batch 64 of 1×28×28 images."""
    batch = 64
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        nn.Linear(128, 10),
    ).to(device)
    inputs = torch.rand(batch, 1, 28, 28, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return supervised_step(model, inputs, targets, F.cross_entropy, optimizer)


def build_r4(device: torch.device):
    """R4: dense autoencoder (Opal's `Autoencoder(kind: .dense)`): Linear 784→256, ReLU, 256→32;
    Linear 32→256, ReLU, 256→784, Sigmoid; mean squared reconstruction error, Adam lr 1e-3, batch 128."""
    batch = 128
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 32),
        nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid(),
        nn.Unflatten(1, (1, 28, 28)),
    ).to(device)
    inputs = torch.rand(batch, 1, 28, 28, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return supervised_step(model, inputs, inputs, F.mse_loss, optimizer)


def build_r5(device: torch.device):
    """R5: DCGAN-small (Opal's `DCGAN()` trained by `GANTrainer.step(real:)`), batch 64, noise size 100.

    G: Linear 100→128·7·7 (no bias), BatchNorm, ReLU, reshape; ConvTranspose 128→64 4×4 s2 p1 (no bias), BatchNorm,
    ReLU; ConvTranspose 64→1 4×4 s2 p1, Tanh. D: Conv 1→64 4×4 s2 p1, LeakyReLU 0.2; Conv 64→128 4×4 s2 p1 (no bias),
    BatchNorm, LeakyReLU 0.2; Flatten; Linear 6272→1 (a logit). One step = one D update (BCE with logits on a real
    batch, label 1, and a generated batch made without gradients, label 0) and one G update (BCE of D(G(z)) against
    label 1, with D's weights frozen so only the input gradient flows through D). Adam lr 2e-4, β = (0.5, 0.999).
    Real images are drawn in [0, 1] and scaled to [−1, 1] inside the step, as Opal does."""
    batch, noise_size = 64, 100
    generator = nn.Sequential(
        nn.Linear(noise_size, 128 * 7 * 7, bias=False), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU(),
        nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1), nn.Tanh(),
    ).to(device)
    discriminator = nn.Sequential(
        nn.Conv2d(1, 64, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 1),
    ).to(device)
    generator.train()
    discriminator.train()
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    images = torch.rand(batch, 1, 28, 28, device=device)
    bce = F.binary_cross_entropy_with_logits

    def step():
        real = images * 2 - 1
        ones = torch.ones(batch, 1, device=device)
        zeros = torch.zeros(batch, 1, device=device)
        discriminator_optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = generator(torch.randn(batch, noise_size, device=device))
        d_loss = bce(discriminator(real), ones) + bce(discriminator(fake), zeros)
        d_loss.backward()
        discriminator_optimizer.step()
        generator_optimizer.zero_grad(set_to_none=True)
        discriminator.requires_grad_(False)
        try:
            g_loss = bce(discriminator(generator(torch.randn(batch, noise_size, device=device))), ones)
            g_loss.backward()
            generator_optimizer.step()
        finally:
            discriminator.requires_grad_(True)
        return d_loss, g_loss
    return step


# The issue's K4/K5 shape and R3's (issue #6: Embedding 65×64, LSTM 64→256, Linear 256→65, batch 32, seq 64).
RECURRENT_LAYER_SHAPE = {"batch": 64, "seq": 128, "input_size": 256, "hidden": 512}
R3_SHAPE = {"batch": 32, "seq": 64, "input_size": 64, "hidden": 256}


def recurrent_layer_step(layer: nn.Module, device: torch.device, batch: int, seq: int, input_size: int):
    """Forward + backward of one recurrent layer over a whole sequence (Opal's `RecurrentBenchmark`):
    zero initial state, loss = sum of all outputs, gradients of the weights and of the input."""
    layer.train()
    inputs = (torch.rand(batch, seq, input_size, device=device) * 2 - 1).requires_grad_(True)

    def step():
        layer.zero_grad(set_to_none=True)
        inputs.grad = None
        output, _ = layer(inputs)
        loss = output.sum()
        loss.backward()
        return loss
    return step


def build_k4(device: torch.device, batch=64, seq=128, input_size=256, hidden=512):
    """K4: torch.nn.LSTM(input_size, hidden, batch_first=True), one layer, forward + backward."""
    layer = nn.LSTM(input_size, hidden, batch_first=True).to(device)
    return recurrent_layer_step(layer, device, batch, seq, input_size)


def build_k5(device: torch.device, batch=64, seq=128, input_size=256, hidden=512):
    """K5: torch.nn.GRU(input_size, hidden, batch_first=True), one layer, forward + backward."""
    layer = nn.GRU(input_size, hidden, batch_first=True).to(device)
    return recurrent_layer_step(layer, device, batch, seq, input_size)


class CharLanguageModel(nn.Module):
    """Opal's `CharLanguageModel`: Embedding V×E → LSTM E→H (batch first) → Linear H→V at every step."""

    def __init__(self, vocabulary: int, embedding: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, embedding)
        self.rnn = nn.LSTM(embedding, hidden, batch_first=True)
        self.output = nn.Linear(hidden, vocabulary)

    def forward(self, ids):
        hidden, _ = self.rnn(self.embedding(ids))
        return self.output(hidden)


def build_r3(device: torch.device, batch=32, seq=64, input_size=64, hidden=256):
    """R3: character LSTM language model, vocabulary 65 (Embedding 65×64, LSTM 64→256, Linear 256→65), zero initial
    state, mean cross-entropy over every position, Adam lr 2e-3 (Opal's trainer default), batch 32 of 64 ids."""
    vocabulary = 65
    model = CharLanguageModel(vocabulary, input_size, hidden).to(device)
    ids = torch.randint(0, vocabulary, (batch, seq + 1), device=device)
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_fn(logits, labels):
        return F.cross_entropy(logits.reshape(-1, vocabulary), labels.reshape(-1))
    return supervised_step(model, inputs, targets, loss_fn, optimizer)


# K3 (Opal's `AttentionBenchmark`): B 8, H 8, D 64, causal; N = --seq.
ATTENTION_SHAPE = {"batch": 8, "seq": 1024, "heads": 8, "head_dim": 64}


def build_k3(device: torch.device, batch=8, seq=1024, heads=8, head_dim=64):
    """K3: F.scaled_dot_product_attention(q, k, v, is_causal=True) on fp32 [batch, heads, seq, head_dim] tensors,
    loss = sum of the output, backward (gradients of q, k and v)."""
    def operand():
        return (torch.rand(batch, heads, seq, head_dim, device=device) * 2 - 1).requires_grad_(True)
    q, k, v = operand(), operand(), operand()

    def step():
        for tensor in (q, k, v):
            tensor.grad = None
        loss = F.scaled_dot_product_attention(q, k, v, is_causal=True).sum()
        loss.backward()
        return loss
    return step


class CausalSelfAttention(nn.Module):
    """Opal's `MultiHeadAttention` used causally: one stacked input projection (in_proj_weight [3E, E], as
    nn.MultiheadAttention), heads of E / H, F.scaled_dot_product_attention(is_causal=True), out_proj."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x):
        batch, time_steps, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, time_steps, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(batch, time_steps, width))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Opal's pre-LN `TransformerBlock` (causal, no cross-attention): parameter names ln1, attn, ln2, mlp.fc1/fc2."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = FeedForward(width, 4 * width)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Opal's `GPT` with the same parameter names (token_embedding, position_embedding, blocks.N.…, ln_f, head),
    so an Opal checkpoint loads with load_state_dict."""

    def __init__(self, vocabulary=65, context=64, width=128, heads=4, blocks=2):
        super().__init__()
        self.token_embedding = nn.Embedding(vocabulary, width)
        self.position_embedding = nn.Embedding(context, width)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(blocks)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocabulary)
        for embedding in (self.token_embedding, self.position_embedding):
            nn.init.normal_(embedding.weight, std=0.02)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_r6(device: torch.device, batch=32, seq=64):
    """R6: GPT vocabulary 65, context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4x GELU; random ids
    [32, 65] split into inputs and next-id targets, mean cross-entropy, Adam 1e-3."""
    vocabulary = 65
    model = GPT(vocabulary, seq).to(device)
    ids = torch.randint(0, vocabulary, (batch, seq + 1), device=device)
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn(logits, labels):
        return F.cross_entropy(logits.reshape(-1, vocabulary), labels.reshape(-1))
    return supervised_step(model, inputs, targets, loss_fn, optimizer)


# The training-step workloads, each a builder returning a one-step function. The recurrent layer workloads (K4, K5)
# and R3 take shape overrides.
WORKLOADS: Dict[str, Workload] = {
    "R1": Workload("MLP 784-512-512-10 ReLU, cross-entropy, Adam 1e-3, batch 128", build_r1),
    "R2": Workload("CNN conv 32, conv 64, linear 3136-128-10, cross-entropy, Adam 1e-3, batch 64", build_r2),
    "R4": Workload("dense autoencoder 784-256-32-256-784, MSE, Adam 1e-3, batch 128", build_r4),
    "R5": Workload("DCGAN-small, one D + one G update, BCE with logits, Adam 2e-4 (0.5, 0.999), batch 64", build_r5),
    "R3": Workload("char LSTM LM: Embedding 65x64, LSTM 64-256, Linear 256-65 every step, cross-entropy, Adam 2e-3",
                   build_r3, dict(R3_SHAPE)),
    "K4": Workload("nn.LSTM one layer, forward + backward of the sequence (sum of outputs)", build_k4,
                   dict(RECURRENT_LAYER_SHAPE)),
    "K5": Workload("nn.GRU one layer, forward + backward of the sequence (sum of outputs)", build_k5,
                   dict(RECURRENT_LAYER_SHAPE)),
    "R6": Workload("GPT vocab 65, context 64, d_model 128, 4 heads, 2 pre-LN blocks, MLP 4x GELU, cross-entropy, "
                   "Adam 1e-3, batch 32", build_r6),
    "K3": Workload("F.scaled_dot_product_attention causal fp32, forward + backward (sum of outputs)", build_k3,
                   dict(ATTENTION_SHAPE)),
}


# K2 (Opal's `ConvBenchmark.k2Shapes`): name -> (batch, in channels, size, out channels, kernel, stride, padding).
CONV_SHAPES = {
    "3x3": (32, 64, 56, 64, 3, 1, 1),
    "7x7s2": (32, 3, 224, 64, 7, 2, 3),
}
CONV_PASSES = ("forward", "backward-data", "backward-weight")


def time_conv(device: torch.device, warmup: int, steps: int, batch=None) -> dict:
    """K2: each pass of each K2 convolution timed alone on pre-allocated tensors: forward F.conv2d(x, w, b),
    backward-data torch.nn.grad.conv2d_input (dx from dy and w), backward-weight torch.nn.grad.conv2d_weight (dw from
    x and dy). FLOPs per pass: 2 · N · Cout · Hout · Wout · Cin · kh · kw (as Opal's `Conv2DDescriptor.flops`)."""
    shapes = {}
    for name, (n, cin, size, cout, kernel, stride, padding) in CONV_SHAPES.items():
        n = batch or n
        x = torch.rand(n, cin, size, size, device=device) * 2 - 1
        w = torch.rand(cout, cin, kernel, kernel, device=device) * 2 - 1
        b = torch.rand(cout, device=device) * 2 - 1
        out = (size + 2 * padding - kernel) // stride + 1
        dy = torch.rand(n, cout, out, out, device=device) * 2 - 1
        flops = 2 * n * cout * out * out * cin * kernel * kernel
        passes = {
            "forward": lambda: F.conv2d(x, w, b, stride=stride, padding=padding),
            "backward-data": lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=stride, padding=padding),
            "backward-weight": lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=padding),
        }
        results = {}
        with torch.no_grad():
            for pass_name in CONV_PASSES:
                run = passes[pass_name]
                for _ in range(warmup):
                    run()
                synchronize(device)
                times_ms = []
                for _ in range(steps):
                    start = time.perf_counter()
                    run()
                    synchronize(device)
                    times_ms.append((time.perf_counter() - start) * 1000)
                times_ms.sort()
                median = statistics.median(times_ms)
                results[pass_name] = {"median_ms": median, "p10_ms": percentile(times_ms, 0.10),
                                      "p90_ms": percentile(times_ms, 0.90), "steps": steps,
                                      "gflops": flops / (median * 1e-3) / 1e9}
        shapes[name] = {"batch": n, "in_channels": cin, "size": size, "out_channels": cout, "kernel": kernel,
                        "stride": stride, "padding": padding, "flops": flops, "passes": results}
    return {"description": "F.conv2d forward, conv2d_input (backward-data), conv2d_weight (backward-weight), fp32",
            "shapes": shapes, "device": device_description(device), "torch": torch.__version__}


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_step(name: str, device: torch.device, warmup: int, steps: int, overrides=None) -> dict:
    """Times workload `name`; `overrides` ({"batch": …, "seq": …, "input_size": …, "hidden": …}) applies to the
    workloads that take a shape (K4, K5, R3)."""
    base = WORKLOADS[name].shape
    # Each shaped workload takes the overrides it knows (K3 has no input size, K4 no heads).
    shape = {**base, **{key: value for key, value in (overrides or {}).items() if key in base}} if base else {}
    step = WORKLOADS[name].build(device, **shape)
    for _ in range(warmup):
        step()
    synchronize(device)

    times_ms = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times_ms.append((time.perf_counter() - start) * 1000)
    times_ms.sort()
    return {
        "description": WORKLOADS[name].description,
        "median_ms": statistics.median(times_ms),
        "p10_ms": percentile(times_ms, 0.10),
        "p90_ms": percentile(times_ms, 0.90),
        "steps": steps,
        "device": device_description(device),
        "torch": torch.__version__,
        **({"shape": shape} if shape else {}),
    }


def time_gemm(sizes: List[int], device: torch.device, warmup: int, repeats: int) -> dict:
    """Median time of C = A·B for n×n fp32 matrices; CUDA timed with events, the CPU with perf_counter."""
    results = {}
    for n in sizes:
        a = torch.rand(n, n, device=device)
        b = torch.rand(n, n, device=device)
        c = torch.empty(n, n, device=device)
        for _ in range(warmup):
            torch.mm(a, b, out=c)
        synchronize(device)
        times_ms = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                torch.mm(a, b, out=c)
                end.record()
                end.synchronize()
                times_ms.append(start.elapsed_time(end))
            else:
                start = time.perf_counter()
                torch.mm(a, b, out=c)
                times_ms.append((time.perf_counter() - start) * 1000)
        median = statistics.median(times_ms)
        results[str(n)] = {"median_ms": median, "gflops": 2 * n ** 3 / (median * 1e-3) / 1e9}
    return {"sizes": results, "device": device_description(device), "torch": torch.__version__}


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default 2 on the CPU; unchanged on CUDA)")
    parser.add_argument("--workloads", default="R1",
                        help=f"comma-separated workloads (known: {', '.join(WORKLOADS)}, K2)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="timed steps (at least 200 for reports)")
    parser.add_argument("--gemm", action="store_true", help="also time torch.mm for square sizes 256…2048")
    parser.add_argument("--gemm-sizes", default="256,512,1024,2048")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, help="batch size of K2, K3, K4, K5 and R3 (default: the issue's)")
    parser.add_argument("--seq", type=int, help="sequence length of K4, K5 and R3")
    parser.add_argument("--input-size", type=int, help="input features of K4/K5; the embedding size of R3")
    parser.add_argument("--hidden", type=int, help="hidden size of K4, K5 and R3")
    parser.add_argument("--heads", type=int, help="attention heads of K3")
    parser.add_argument("--head-dim", type=int, help="head dimension of K3")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in
                 [("batch", args.batch), ("seq", args.seq), ("input_size", args.input_size), ("hidden", args.hidden),
                  ("heads", args.heads), ("head_dim", args.head_dim)]
                 if value is not None}
    if any(value <= 0 for value in overrides.values()):
        print(f"error: shape overrides must be positive, got {overrides}", file=sys.stderr)
        return 2

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (2 if args.device == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    # fp32 means fp32: no TF32 tensor-core shortcuts on NVIDIA GPUs.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.manual_seed(args.seed)

    names = [name.strip() for name in args.workloads.split(",") if name.strip()]
    # K2 is not one training step but six passes: timed by time_conv, reported under "K2".
    conv = "K2" in names
    names = [name for name in names if name != "K2"]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        print(f"error: unknown workload(s) {unknown}; known: {list(WORKLOADS)}", file=sys.stderr)
        return 2

    fixed = [name for name in names if not WORKLOADS[name].shape]
    if conv and set(overrides) - {"batch"}:
        print(f"error: K2 takes --batch only, got {sorted(set(overrides) - {'batch'})}", file=sys.stderr)
        return 2
    if overrides and fixed:
        print(f"error: --batch/--seq/--input-size/--hidden/--heads/--head-dim apply to K3, K4, K5 and R3, not to {fixed}",
              file=sys.stderr)
        return 2

    report = {name: time_training_step(name, device, args.warmup, args.steps, overrides) for name in names}
    if conv:
        report["K2"] = time_conv(device, args.warmup, args.steps, overrides.get("batch"))
    if args.gemm:
        sizes = [int(size) for size in args.gemm_sizes.split(",")]
        report["gemm"] = time_gemm(sizes, device, warmup=3, repeats=10 if device.type == "cpu" else 50)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name in names:
        r = report[name]
        print(f"{name} ({r['description']}) on {r['device']}, torch {r['torch']}: "
              f"median {r['median_ms']:.3f} ms  p10 {r['p10_ms']:.3f}  p90 {r['p90_ms']:.3f}  ({r['steps']} steps)")
    if conv:
        print(f"K2 convolution on {report['K2']['device']}:")
        for shape, r in report["K2"]["shapes"].items():
            for pass_name, p in r["passes"].items():
                print(f"  {shape:>6} N{r['batch']} {pass_name:<16} {p['median_ms']:9.3f} ms  {p['gflops']:8.1f} GFLOP/s")
    if args.gemm:
        print(f"GEMM on {report['gemm']['device']}:")
        for n, r in report["gemm"]["sizes"].items():
            print(f"  {n:>5} × {n:<5} {r['median_ms']:9.3f} ms  {r['gflops']:8.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
