#!/usr/bin/env python3
"""PyTorch reference timings for Opal's benchmark suite.

Measures the same workloads as `opal bench` so Opal's numbers can be read against a mature framework
on the same machine:

* training steps (R1 …): forward, loss, backward and optimizer update of one batch, with the data
  already on the device; warm-up steps, then the median (and p10/p90) of many timed steps;
* GEMM (--gemm): C = A·B for square fp32 matrices, in ms and GFLOP/s.

Settings that must match Opal's: fp32 everywhere, TF32 off, data resident on the device, a fixed seed.
On CUDA each step ends with torch.cuda.synchronize() so the time covers the whole step.

Examples:
    python3 pytorch_reference.py                       # R1 on the CPU with 2 threads
    python3 pytorch_reference.py --device cuda --json  # R1 on the GPU, JSON on stdout
    python3 pytorch_reference.py --gemm --threads 2    # GEMM 256…2048
"""

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Workload:
    """One training-step benchmark: a model, a batch on the device, a loss and an optimizer."""
    description: str
    # (device) -> (model, inputs, targets, loss_fn, optimizer)
    build: Callable


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
    return model, inputs, targets, F.cross_entropy, optimizer


# The training-step workloads. R2–R6 (CNN, LSTM, GRU/char-RNN, GPT, VAE …) and kernel workloads K1–K5
# are added here with the same shape: a builder returning (model, inputs, targets, loss_fn, optimizer).
WORKLOADS: Dict[str, Workload] = {
    "R1": Workload("MLP 784-512-512-10 ReLU, cross-entropy, Adam 1e-3, batch 128", build_r1),
}


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(sorted_values: List[float], fraction: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def time_training_step(name: str, device: torch.device, warmup: int, steps: int) -> dict:
    model, inputs, targets, loss_fn, optimizer = WORKLOADS[name].build(device)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

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
                        help=f"comma-separated training workloads (known: {', '.join(WORKLOADS)})")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200, help="timed steps (at least 200 for reports)")
    parser.add_argument("--gemm", action="store_true", help="also time torch.mm for square sizes 256…2048")
    parser.add_argument("--gemm-sizes", default="256,512,1024,2048")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

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
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        print(f"error: unknown workload(s) {unknown}; known: {list(WORKLOADS)}", file=sys.stderr)
        return 2

    report = {name: time_training_step(name, device, args.warmup, args.steps) for name in names}
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
    if args.gemm:
        print(f"GEMM on {report['gemm']['device']}:")
        for n, r in report["gemm"]["sizes"].items():
            print(f"  {n:>5} × {n:<5} {r['median_ms']:9.3f} ms  {r['gflops']:8.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
