#!/usr/bin/env python3
"""Cross-checks Opal's safetensors checkpoints with the reference implementation.

Reads a file with `safetensors.torch` (else `safetensors.numpy`, else a tiny parser of its own) and
prints its tensors; writes files from PyTorch/numpy for the reverse direction. SafeTensorsTests runs
it when `python3 -c "import safetensors.torch"` works.

Examples:
    python3 safetensors_check.py read model.safetensors                 # names, dtypes, shapes, sums
    python3 safetensors_check.py read model.safetensors --json --values # JSON with int32 bit patterns
    python3 safetensors_check.py write theirs.safetensors --seed 3      # float32/int32 tensors + metadata
    python3 safetensors_check.py write half.safetensors --dtype bfloat16
    python3 safetensors_check.py mlp mlp.safetensors --sizes 784,512,10 # nn.Sequential MLP + input/output
    python3 safetensors_check.py gpt gpt.safetensors --vocabulary 11 --context 16 --width 32  # GPT + ids/logits
    python3 safetensors_check.py check-gpt opal-gpt.safetensors        # Opal's GPT in PyTorch, compare logits

JSON output of `read`: {"reader": "safetensors.torch" | "safetensors.numpy" | "builtin",
"metadata": {...}, "tensors": {name: {"dtype": "F32", "shape": [..], "sum": float, "bits": [...]}}}
where "bits" (with --values) holds each element as a signed int32: the IEEE bit pattern of a
float32, the value of an int32.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

NUMPY_DTYPES = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64,
                "F16": np.float16, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _contiguous(array):
    """A C-contiguous copy that keeps 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return np.require(array, requirements="C")


def _numpy_dtype_name(array):
    for name, dtype in NUMPY_DTYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"unsupported numpy dtype {array.dtype}")


def read_builtin(path):
    """The whole format in a few lines: 8-byte little-endian length, JSON header, byte buffer."""
    with open(path, "rb") as handle:
        data = handle.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", None) or {}
    buffer = data[8 + length:]
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = NUMPY_DTYPES[entry["dtype"]]
        tensors[name] = np.frombuffer(buffer[begin:end], dtype=np.dtype(dtype).newbyteorder("<")) \
            .reshape(entry["shape"])
    return metadata, tensors


def read(path):
    """(reader name, metadata, {name: (dtype name, shape, numpy array or None)})."""
    try:
        import torch
        from safetensors import safe_open
        result = {}
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                dtype = {torch.float32: "F32", torch.int32: "I32", torch.bfloat16: "BF16",
                         torch.float16: "F16", torch.float64: "F64", torch.int64: "I64"}.get(tensor.dtype, str(tensor.dtype))
                array = tensor.numpy() if dtype in ("F32", "I32", "F16", "F64", "I64") else None
                result[name] = (dtype, list(tensor.shape), array)
        return "safetensors.torch", metadata, result
    except ImportError:
        pass
    try:
        from safetensors import safe_open
        result = {}
        with safe_open(path, framework="np") as handle:
            metadata = handle.metadata() or {}
            for name in handle.keys():
                array = handle.get_tensor(name)
                result[name] = (_numpy_dtype_name(array), list(array.shape), array)
        return "safetensors.numpy", metadata, result
    except ImportError:
        metadata, tensors = read_builtin(path)
        return "builtin", metadata, {name: (_numpy_dtype_name(a), list(a.shape), a) for name, a in tensors.items()}


def command_read(arguments):
    reader, metadata, tensors = read(arguments.file)
    described = {}
    for name, (dtype, shape, array) in sorted(tensors.items()):
        entry = {"dtype": dtype, "shape": shape}
        if array is not None:
            finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
            entry["sum"] = float(np.asarray(finite, dtype=np.float64).sum())
            if arguments.values and dtype in ("F32", "I32"):
                entry["bits"] = _contiguous(array).view(np.int32).reshape(-1).tolist()
        described[name] = entry
    if arguments.json:
        json.dump({"reader": reader, "metadata": metadata, "tensors": described}, sys.stdout)
        print()
        return
    print(f"{arguments.file} (read with {reader})")
    for key, value in sorted(metadata.items()):
        print(f"  metadata {key!r}: {value!r}")
    for name, entry in described.items():
        print(f"  {name:40s} {entry['dtype']:5s} {str(entry['shape']):20s} sum {entry.get('sum', float('nan')):.6g}")


def write_builtin(path, tensors, metadata):
    """Same bytes as safetensors.numpy.save_file for F32/I32 (up to the order of the metadata keys):
    F32 tensors, then I32 tensors, each sorted by name; space-padded header."""
    header = {"__metadata__": metadata} if metadata else {}
    offset, chunks = 0, []
    for name in sorted(tensors, key=lambda n: (_numpy_dtype_name(tensors[n]) != "F32", n.encode())):
        data = _contiguous(tensors[name]).astype(tensors[name].dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _numpy_dtype_name(tensors[name]), "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def command_write(arguments):
    rng = np.random.default_rng(arguments.seed)
    tensors = {
        "encoder.0.weight": rng.standard_normal((33, 7), dtype=np.float32),
        "encoder.0.bias": rng.standard_normal(33, dtype=np.float32),
        # A transposed array (made contiguous, so stored row-major as the format requires).
        "decoder.weight": rng.standard_normal((7, 5), dtype=np.float32).T,
        "labels": rng.integers(-2**31, 2**31, size=(2, 3), dtype=np.int32),
        "step": np.array(12345, dtype=np.int32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-40], dtype=np.float32),
    }
    metadata = {"writer": "safetensors_check.py", "seed": str(arguments.seed)}
    if arguments.dtype != "float32":
        import torch
        from safetensors.torch import save_file
        converted = {name: torch.from_numpy(_contiguous(array)) for name, array in tensors.items()}
        converted = {name: t.to(getattr(torch, arguments.dtype)) if t.is_floating_point() else t
                     for name, t in converted.items()}
        save_file(converted, arguments.file, metadata=metadata)
        return
    try:
        import torch
        from safetensors.torch import save_file
        save_file({name: torch.from_numpy(_contiguous(a)) for name, a in tensors.items()},
                  arguments.file, metadata=metadata)
    except ImportError:
        try:
            from safetensors.numpy import save_file
            save_file({name: _contiguous(a) for name, a in tensors.items()}, arguments.file, metadata=metadata)
        except ImportError:
            write_builtin(arguments.file, tensors, metadata)


def command_mlp(arguments):
    """nn.Sequential(Flatten, Linear, ReLU, …, Linear) state_dict, plus "input" and its "output"."""
    import torch
    import torch.nn as nn
    from safetensors.torch import save_file
    torch.manual_seed(arguments.seed)
    sizes = [int(s) for s in arguments.sizes.split(",")]
    layers = [nn.Flatten()]
    for width_in, width_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    model = nn.Sequential(*layers)
    x = torch.randn(arguments.batch, sizes[0])
    with torch.no_grad():
        y = model(x)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    state["input"], state["output"] = x, y
    save_file(state, arguments.file, metadata={"format": "pt"})


def r2_cnn(nn, classes=10, size=28):
    """Opal's CNN.simple() (R2) as a PyTorch nn.Sequential: the same child indices, so the same names."""
    side = size // 4
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, classes))


def command_cnn(arguments):
    """R2's state_dict from PyTorch, plus "input" [batch, 1, 28, 28] and its "output"."""
    import torch
    import torch.nn as nn
    from safetensors.torch import save_file
    torch.manual_seed(arguments.seed)
    model = r2_cnn(nn)
    x = torch.randn(arguments.batch, 1, 28, 28)
    with torch.no_grad():
        y = model(x)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    state["input"], state["output"] = x, y
    save_file(state, arguments.file, metadata={"format": "pt"})


def command_check_cnn(arguments):
    """Loads an Opal R2 checkpoint (with extra tensors "input" and Opal's "output") into the PyTorch module
    with strict=True, runs the input and compares; prints JSON and exits 1 when they disagree."""
    import torch
    import torch.nn as nn
    from safetensors.torch import load_file
    tensors = load_file(arguments.file)
    x, expected = tensors.pop("input"), tensors.pop("output")
    model = r2_cnn(nn)
    model.load_state_dict(tensors, strict=True)
    with torch.no_grad():
        y = model(x)
    difference = float((y - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    print(json.dumps({"max_abs_difference": difference, "scale": scale, "shape": list(y.shape)}))
    sys.exit(0 if difference <= arguments.tolerance * scale else 1)


def reference_gpt(vocabulary, context, width, heads, blocks):
    """pytorch_reference.GPT (Opal's GPT with the same parameter names), from the script beside this one."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pytorch_reference import GPT
    return GPT(vocabulary, context, width, heads, blocks)


def command_gpt(arguments):
    """pytorch_reference.GPT's state_dict (every tensor perturbed by 0.1·N(0, 1), so that the zero biases and
    the unit layer-norm gains matter too), plus "input" int32 [batch, time] ids and their "output" logits
    [batch, time, vocabulary], computed in float64 from the stored float32 weights. The metadata holds the
    configuration under Opal's keys (opal.context, opal.model_size, opal.heads, opal.blocks)."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(arguments.seed)
    model = reference_gpt(arguments.vocabulary, arguments.context, arguments.width, arguments.heads, arguments.blocks)
    model.eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    ids = torch.randint(0, arguments.vocabulary, (arguments.batch, arguments.time), dtype=torch.int32)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        logits = model.double()(ids.long()).float()
    state["input"], state["output"] = ids, logits
    metadata = {"format": "pt", "opal.model": "gpt", "opal.context": str(arguments.context),
                "opal.model_size": str(arguments.width), "opal.heads": str(arguments.heads),
                "opal.blocks": str(arguments.blocks)}
    save_file(state, arguments.file, metadata=metadata)


def command_check_gpt(arguments):
    """Loads an Opal GPT checkpoint (with extra tensors "input" int32 [batch, time] and Opal's "output" logits)
    into pytorch_reference.GPT with strict=True, runs the ids in float64 and compares; prints JSON and exits 1
    when the largest difference exceeds tolerance · max(1, max |output|). The sizes come from the tensors'
    shapes, the head count from --heads or else the metadata "opal.heads" (GPT.descriptionMetadata)."""
    import torch
    from safetensors import safe_open
    with safe_open(arguments.file, framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    ids, expected = tensors.pop("input"), tensors.pop("output")
    heads = arguments.heads if arguments.heads is not None else int(metadata.get("opal.heads", 0))
    if heads <= 0:
        sys.exit(f"{arguments.file}: no head count (pass --heads or save with metadata opal.heads)")
    vocabulary, width = tensors["token_embedding.weight"].shape
    context = tensors["position_embedding.weight"].shape[0]
    blocks = len({name.split(".")[1] for name in tensors if name.startswith("blocks.")})
    model = reference_gpt(vocabulary, context, width, heads, blocks)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    with torch.no_grad():
        y = model.double()(ids.long())
    difference = float((y - expected.double()).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    print(json.dumps({"max_abs_difference": difference, "scale": scale, "shape": list(y.shape),
                      "configuration": {"vocabulary": vocabulary, "context": context, "width": width,
                                        "heads": heads, "blocks": blocks}}))
    sys.exit(0 if difference <= arguments.tolerance * scale else 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    read_parser = commands.add_parser("read", help="print a file's metadata and tensors")
    read_parser.add_argument("file")
    read_parser.add_argument("--json", action="store_true", help="JSON on stdout")
    read_parser.add_argument("--values", action="store_true", help="include every element (as int32 bits)")
    read_parser.set_defaults(run=command_read)
    write_parser = commands.add_parser("write", help="write a file of known tensors")
    write_parser.add_argument("file")
    write_parser.add_argument("--seed", type=int, default=0)
    write_parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                              help="dtype of the float tensors (float16/bfloat16 need torch)")
    write_parser.set_defaults(run=command_write)
    mlp_parser = commands.add_parser("mlp", help="write a PyTorch MLP's weights with an input and its output")
    mlp_parser.add_argument("file")
    mlp_parser.add_argument("--sizes", default="784,512,512,10", help="input,hidden…,output")
    mlp_parser.add_argument("--batch", type=int, default=4)
    mlp_parser.add_argument("--seed", type=int, default=0)
    mlp_parser.set_defaults(run=command_mlp)
    cnn_parser = commands.add_parser("cnn", help="write PyTorch R2 CNN weights with an input and its output")
    cnn_parser.add_argument("file")
    cnn_parser.add_argument("--batch", type=int, default=4)
    cnn_parser.add_argument("--seed", type=int, default=0)
    cnn_parser.set_defaults(run=command_cnn)
    check_parser = commands.add_parser("check-cnn", help="run an Opal R2 checkpoint in PyTorch and compare outputs")
    check_parser.add_argument("file")
    check_parser.add_argument("--tolerance", type=float, default=1e-5)
    check_parser.set_defaults(run=command_check_cnn)
    gpt_parser = commands.add_parser("gpt", help="write PyTorch GPT weights (pytorch_reference.GPT) with ids and logits")
    gpt_parser.add_argument("file")
    gpt_parser.add_argument("--vocabulary", type=int, default=65)
    gpt_parser.add_argument("--context", type=int, default=64)
    gpt_parser.add_argument("--width", type=int, default=128, help="d_model")
    gpt_parser.add_argument("--heads", type=int, default=4)
    gpt_parser.add_argument("--blocks", type=int, default=2)
    gpt_parser.add_argument("--batch", type=int, default=2)
    gpt_parser.add_argument("--time", type=int, default=None, help="ids per sequence (default: the context)")
    gpt_parser.add_argument("--seed", type=int, default=0)
    gpt_parser.set_defaults(run=command_gpt)
    check_gpt_parser = commands.add_parser("check-gpt", help="run an Opal GPT checkpoint in PyTorch and compare logits")
    check_gpt_parser.add_argument("file")
    check_gpt_parser.add_argument("--heads", type=int, default=None, help="default: the metadata's opal.heads")
    check_gpt_parser.add_argument("--tolerance", type=float, default=1e-5)
    check_gpt_parser.set_defaults(run=command_check_gpt)
    arguments = parser.parse_args()
    if getattr(arguments, "time", 0) is None:
        arguments.time = arguments.context
    arguments.run(arguments)


if __name__ == "__main__":
    main()
