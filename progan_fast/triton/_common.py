"""What every Triton kernel wrapper shares: where it may run, the device scope of a launch, and eps in full."""
import contextlib
import os

import torch


def interpreted():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_device(x, what):
    """Triton kernels run on CUDA tensors, and on CPU tensors only under TRITON_INTERPRET=1."""
    if x.device.type != "cuda" and not interpreted():
        raise RuntimeError(f"progan_fast_triton {what} runs on CUDA tensors (CPU tensors only under "
                           f"TRITON_INTERPRET=1); got a tensor on {x.device}")


def device_scope(x):
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def split_eps(eps):
    """eps as float32 hi + lo: Triton passes a Python float as float32 (the interpreter even when annotated
    float64), and float64 inputs need eps to full precision, where it dominates tiny-norm gradients."""
    hi = float(torch.tensor(eps, dtype=torch.float32))
    return hi, float(eps) - hi
