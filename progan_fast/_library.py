"""The kernel families and the one place where their raw ops are defined.

A fused op is a few raw ops (pixel norm: `pixel_norm_forward`, `pixel_norm_backward`), each with one schema that
every kernel family defines identically in its own namespace:

  family     namespace              kernels
  cpu        progan_fast            csrc/cpu/<op>.cpp (CPU dispatch key)
  cuda       progan_fast            csrc/cuda/<op>.cu (CUDA dispatch key)
  emulated   progan_fast_emulated   the CUDA kernels' device code run on the CPU, thread by thread (tests only)
  triton     progan_fast_triton     progan_fast/triton/<op>.py

An op module lists its raw ops as `RawOp`s and calls `define`: the schema is defined in every namespace, and the
fake (meta) function and the Python autograd are registered for each, so every family differentiates (twice)
and traces the same way. The C++ extension only registers kernels (TORCH_LIBRARY_IMPL), never schemas.
"""
import dataclasses
import functools
import importlib
import math
from typing import Callable, Optional

import torch

NAMESPACES = {"cpu": "progan_fast", "cuda": "progan_fast", "emulated": "progan_fast_emulated",
              "triton": "progan_fast_triton"}
FAMILY_NAMESPACES = tuple(dict.fromkeys(NAMESPACES.values()))

# One fragment per namespace, alive for the whole process (a Library's registrations end with it).
_libraries = {ns: torch.library.Library(ns, "FRAGMENT") for ns in FAMILY_NAMESPACES}
_raw_ops = {}


@dataclasses.dataclass(frozen=True)
class RawOp:
    """One raw op: `name` and `schema` ("(Tensor x, ...) -> Tensor"); `check(*args)`, which raises for arguments
    a kernel cannot take (devices, dtypes, shapes) and runs before the fake function and every Python kernel, so
    a meta argument never hides a mismatch (C++ kernels check the same in csrc/common); `fake(*args)`, the
    outputs' metadata; and optionally its autograd:
    `backward(ops, ctx, *grads)` where `ops` is the family's namespace (`torch.ops.<namespace>`), so a backward
    calls its own family's backward op. `composite` instead gives a differentiable implementation in torch ops,
    shared by every family (used for the formulas of higher derivatives); `family_composite(ops, *args)` is the
    same but also gets its family's ops, so a formula can reuse that family's kernels. `cpp_autograd` names
    namespaces whose autograd is registered in C++ (only where per-call overhead was measured to matter)."""
    name: str
    schema: str
    check: Optional[Callable] = None
    fake: Optional[Callable] = None
    backward: Optional[Callable] = None
    setup_context: Optional[Callable] = None
    composite: Optional[Callable] = None
    family_composite: Optional[Callable] = None
    cpp_autograd: tuple = ()


def define(*raw_ops):
    for op in raw_ops:
        if op.name in _raw_ops:
            raise RuntimeError(f"raw op {op.name!r} is defined twice")
        _raw_ops[op.name] = op
        for ns in FAMILY_NAMESPACES:
            lib = _libraries[ns]
            lib.define(op.name + op.schema)
            qualname = f"{ns}::{op.name}"
            # Composites run the same checks as kernels: a wrongly shaped operand would otherwise broadcast.
            if op.composite is not None:
                lib.impl(op.name, _checked(op, op.composite), "CompositeImplicitAutograd")
                continue
            if op.family_composite is not None:
                lib.impl(op.name, _checked(op, functools.partial(op.family_composite, getattr(torch.ops, ns))),
                         "CompositeImplicitAutograd")
                continue
            torch.library.register_fake(qualname, _checked(op, op.fake), lib=lib)
            if op.backward is not None and ns not in op.cpp_autograd:
                torch.library.register_autograd(qualname, functools.partial(op.backward, getattr(torch.ops, ns)),
                                                setup_context=op.setup_context, lib=lib)


KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _arguments(schema):
    """[(type, name)] of a schema "(Tensor x, Tensor? bias, float eps) -> ..."."""
    params = schema[schema.index("(") + 1:schema.index(")")]
    return [tuple(p.strip().rsplit(" ", 1)) for p in params.split(",") if p.strip()]


def check_operands(arguments, args):
    """What every raw op refuses, whatever its own check says (the C++ kernels: csrc/common/checks.h): a tensor
    that is not float16/bfloat16/float32/float64 (0-dim ones are left to the op's check), tensors on different devices (a meta tensor among CPU ones
    would route a real call to the fake kernel, which returns uninitialised memory; a 0-dim CPU tensor such as
    alpha goes with any device, like torch's CPU scalars), and a float argument that is not finite."""
    placed = []
    for (kind, name), value in zip(arguments, args):
        if isinstance(value, torch.Tensor):
            # a 0-dim operand (alpha) is checked by its op's check, which says what it must be (as the kernels do)
            if value.dim() > 0 and value.dtype not in KERNEL_DTYPES:
                raise TypeError(f"{name} must be float16, bfloat16, float32 or float64; got {value.dtype}")
            if value.dim() > 0 or value.device.type != "cpu":
                placed.append((name, value.device))
        elif kind == "float" and not math.isfinite(value):
            raise ValueError(f"{name} must be finite; got {value}")
    if len({device for _, device in placed}) > 1:
        # name the odd one out: a meta tensor among real ones, else the first that differs from the first
        real = [(name, device) for name, device in placed if device.type != "meta"]
        first_name, first_device = real[0] if real else placed[0]
        name, device = next((n, d) for n, d in placed if d != first_device)
        raise RuntimeError(f"{name} must be on {first_device} like {first_name}; got {device}")


def _checked(op, fn):
    arguments = _arguments(op.schema)

    @functools.wraps(fn)
    def checked(*args):
        check_operands(arguments, args)
        if op.check is not None:
            op.check(*args)
        return fn(*args)
    return checked


def register_kernel(family, name, device_types):
    """Decorator registering a Python kernel (Triton's) for raw op `name` of `family`, behind the op's check."""
    def register(fn):
        op = _raw_ops[name]
        torch.library.register_kernel(f"{NAMESPACES[family]}::{name}", device_types, _checked(op, fn),
                                      lib=_libraries[NAMESPACES[family]])
        return fn
    return register


def raw_ops():
    """Names of every raw op, in definition order."""
    return list(_raw_ops)


def kernel_ops():
    """Names of the raw ops that have kernels (not composites): what each family must implement."""
    return [name for name, op in _raw_ops.items() if op.composite is None and op.family_composite is None]


def family_ops(family):
    """`torch.ops.<namespace>` of a kernel family; Triton kernels are registered on first use (importing
    triton is slow and needs a GPU or the interpreter)."""
    if family == "triton":
        importlib.import_module("progan_fast.triton.kernels")
    return getattr(torch.ops, NAMESPACES[family])
