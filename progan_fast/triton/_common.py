"""Plumbing shared by the Triton kernel modules: where they may run, and how float arguments keep float64 accuracy."""
import contextlib
import os

import torch

from .. import _library

NAMESPACE = _library.NAMESPACES["triton"]


def split_float(value):
    """value as float32 hi + lo: Triton passes a Python float as float32 (the interpreter even when annotated
    float64), and float64 inputs need such arguments (eps, a scale) to full precision."""
    hi = float(torch.tensor(value, dtype=torch.float32))
    return hi, float(value) - hi


def interpreted():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_device(x, op):
    if x.device.type != "cuda" and not interpreted():
        raise RuntimeError(f"{NAMESPACE} {op} runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1); "
                           f"got a tensor on {x.device}")


def device_scope(x):
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def reduction_aot_inputs():
    """Meta inputs covering every path of the channel-reduction kernels (pixel norm, the epilogue with pixel norm):
    planes in one pass and in two passes over the channels, rows in one pass and rows wider than a tile."""
    shapes = [((16, 256, 32, 32), torch.contiguous_format),  # planes, one pass
              ((16, 512, 8, 8), torch.contiguous_format),    # planes, two passes over the channels
              ((16, 256, 32, 32), torch.channels_last),      # rows, one pass
              ((4, 8192), None)]                              # rows wider than a tile: two passes
    inputs = []
    for shape, memory_format in shapes:
        x = torch.empty(shape, device="meta")
        inputs.append(x if memory_format is None else x.contiguous(memory_format=memory_format))
    return inputs
