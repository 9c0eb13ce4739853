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
