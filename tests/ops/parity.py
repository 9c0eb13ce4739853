"""Shared checks for every op test: a backend's op against progan_fast.reference, forward, gradients and the
double backward of a WGAN-GP style gradient penalty, with per-dtype tolerances."""
import contextlib
import math

import torch
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from progan_fast import _library, backends, use_backend

# The kernel families whose kernels run on this machine's CPU tensors: the CPU kernels, the CUDA kernels' device
# code emulated thread by thread, and Triton through its interpreter. Every op test runs over all of them.
FAMILIES = [f for f in ("cpu", "emulated", "triton") if backends.available(f)[0]]


# The ISA variants of the CPU kernels' multi-versioned loops (csrc/cpu/isa.h) that this CPU runs, best first: the
# first is the one chosen at load time. check_parity runs the cpu family under each of them.
CPU_ISA_VARIANTS = list(torch.ops.progan_fast._cpu_isa_variants()) if "cpu" in FAMILIES else []


@contextlib.contextmanager
def cpu_isa(variant):
    """The CPU kernels run their `variant` loops inside (test-only: torch.ops.progan_fast._force_cpu_isa), the
    load-time choice again after. Yields a function that lists the variants whose loops have run since entering."""
    ops = torch.ops.progan_fast
    ops._force_cpu_isa(variant)
    try:
        yield lambda: list(ops._cpu_isa_ran())
    finally:
        ops._force_cpu_isa(CPU_ISA_VARIANTS[0])


# The seed of every tensor a property test's example makes (through a torch.Generator): the example is then a
# function of hypothesis's draws, so a failure replays and shrinks (the global RNG gives other values on every
# replay), and the seed printed with the failing case reproduces it.
SEEDS = st.integers(0, 2**32 - 1)


def families_of(op):
    """The families above that have a kernel for public op `op` (the others would run the reference)."""
    return [f for f in FAMILIES if _served_by(op, f)]


def _served_by(op, family):
    with use_backend(family):
        return backends.resolve(op, torch.device("cpu"), warn=False) == family


class _RawOpCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def kernel_ran(backend, op):
    """Asserts that under `backend` the public op `op` ran a raw op of that family's namespace (and not the
    reference in its place); a no-op for the reference backend."""
    calls = _RawOpCalls()
    with use_backend(backend), calls:
        yield
    if backend != "reference":
        namespace = _library.NAMESPACES[backend]
        assert any(name.startswith(f"{namespace}::{op}") for name in calls.names), \
            f"{op} under backend {backend!r} ran {sorted(calls.names)}, none of {namespace}::{op}*"

# (rtol, atol) for the forward and for gradients. fp16/bf16 store results in half precision after fp32 math, so
# they are compared with the float32 reference cast to the same dtype: one or two units in the last place.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
GRAD_TOLERANCES = {
    torch.float64: (1e-9, 1e-11),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}


def layout(x, memory_format):
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


# Pixel norm over one channel: NCHW maps (the planes loops) and latents (rows), odd sizes for the vector tails.
ONE_CHANNEL_SHAPES = [(4, 1, 15, 17), (255, 1)]


def one_channel_input(shape, dtype):
    """x for pixel norm over one channel, where the gradient is eps * r^3 * grad_y: magnitudes log-uniform in
    [1e-3, 3e-2] (where that is far below the r * grad_y of the general formula's two terms, whose float32 rounding
    exceeded it), random signs, and a few down to 1e-4 (where eps is a sizeable part of 1 / r^2)."""
    gen = torch.Generator().manual_seed(0)
    magnitude = 10.0 ** torch.empty(shape, dtype=torch.float64).uniform_(-3, math.log10(3e-2), generator=gen)
    magnitude.view(-1)[:3] = torch.tensor([1e-4, 2e-4, 5e-4], dtype=torch.float64)
    return (magnitude * torch.randn(shape, dtype=torch.float64, generator=gen).sign()).to(dtype)


def assert_close(actual, expected, dtype, grad=False):
    rtol, atol = (GRAD_TOLERANCES if grad else TOLERANCES)[dtype]
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


def _ulp(values, dtype):
    """The spacing of `dtype` at each value (float32 tensor in, float32 out): bf16 has 8 significant bits, fp16 11
    with subnormals below 2^-14."""
    mantissa_bits, min_exponent = (7, -126) if dtype == torch.bfloat16 else (10, -14)
    exponent = torch.floor(torch.log2(values.abs().clamp_min(2.0 ** min_exponent)))
    return torch.exp2(exponent - mantissa_bits)


def assert_rounded_once(actual, expected_half):
    """Half-precision outputs are the float32 math rounded once to the storage dtype: within one unit in the last
    place of the reference evaluated the same way, and equal to it almost everywhere (a kernel that truncates, or
    rounds twice, is off in about half the elements)."""
    dtype = actual.dtype
    a, e = actual.float(), expected_half.float()
    finite = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), finite), "non-finite values differ from the reference"
    a, e = a[finite], e[finite]
    off = (a - e).abs() > _ulp(e, dtype)
    assert not off.any(), f"{int(off.sum())} of {e.numel()} {dtype} outputs more than one unit from the reference"
    differ = (a != e).float().mean().item() if e.numel() else 0.0
    assert differ <= 0.02, f"{differ:.1%} of {dtype} outputs differ from the float32 math rounded once"


def triton_interpreter_truncates_bf16(backend):
    """Triton's CPU interpreter casts float32 to bfloat16 by truncation, whatever rounding is requested (on a GPU
    the cast rounds to nearest even); tests/gpu/test_triton_pixel_norm.py pins that fact, so this exemption goes
    when the interpreter is fixed. The tolerance check above still applies."""
    return backend == "triton" and backends._triton_interpreted()


def _penalty_grads(fn, inputs, weights):
    """Gradient of sum((d<fn(inputs), weights>/d inputs[0])^2) w.r.t. every input: WGAN-GP's double backward.

    An input the penalty does not depend on gets zeros: a kernel may leave such a gradient undefined (a piecewise
    linear op's second derivative), which saves the graph behind it a pass of zeros."""
    out = fn(*inputs)
    (grad,) = torch.autograd.grad((out.to(weights.dtype) * weights).sum(), inputs[0], create_graph=True)
    penalty = grad.to(weights.dtype).square().sum()
    return torch.autograd.grad(penalty, inputs, allow_unused=True, materialize_grads=True)


def check_parity(backend, fn, reference_fn, inputs, dtype, check_double_backward=True, op=None, layout_input=0):
    """fn (under `backend`) and reference_fn agree on outputs, input gradients and the double backward; with
    `op` (the public op's name), the forward must have run that family's kernel. The output must keep the memory
    format of inputs[layout_input].

    The reference runs in float64 on the same values, so the comparison measures the kernel's error only.

    The cpu family is checked under every ISA variant this CPU runs, on the same random weights, and each variant
    must be the one that ran; a case whose kernels run no multi-versioned loop (float64) is checked once."""
    args = (backend, fn, reference_fn, inputs, dtype, check_double_backward, op, layout_input)
    if backend != "cpu":
        return _check_parity_once(*args)
    rng = torch.random.get_rng_state()
    for variant in CPU_ISA_VARIANTS:
        torch.random.set_rng_state(rng)
        with cpu_isa(variant) as variants_ran:
            try:
                _check_parity_once(*args)
            except AssertionError as e:
                e.add_note(f"under the CPU ISA variant {variant}")
                raise
            ran = variants_ran()
        if not ran and variant == CPU_ISA_VARIANTS[0]:
            return
        assert ran == [variant], f"forced the CPU ISA variant {variant}, but the loops of {ran} ran"


def _check_parity_once(backend, fn, reference_fn, inputs, dtype, check_double_backward, op, layout_input):
    inputs = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    ref_inputs = [t.detach().double().requires_grad_(t.is_floating_point()) for t in inputs]
    with kernel_ran(backend, op) if op is not None else use_backend(backend):
        out = fn(*inputs)
    ref_out = reference_fn(*ref_inputs)
    assert out.shape == ref_out.shape
    assert out.dtype == dtype
    assert_close(out, ref_out, dtype)
    if dtype == torch.float16 or (dtype == torch.bfloat16 and not triton_interpreter_truncates_bf16(backend)):
        with torch.no_grad():
            assert_rounded_once(out, reference_fn(*[t.detach() for t in inputs]))
    like = inputs[layout_input]
    if like.dim() == 4:
        expected_cl = like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
        assert out.is_contiguous(memory_format=torch.channels_last if expected_cl else torch.contiguous_format)

    weights = torch.randn(out.shape, dtype=torch.float64)
    work_weights = weights.to(torch.float64 if dtype == torch.float64 else torch.float32)
    with use_backend(backend):
        grads = torch.autograd.grad((out.to(work_weights.dtype) * work_weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref_out * weights).sum(), ref_inputs)
    for g, rg in zip(grads, ref_grads):
        assert_close(g, rg, dtype, grad=True)

    if check_double_backward:
        with use_backend(backend):
            grads2 = _penalty_grads(fn, inputs, work_weights)
        ref_grads2 = _penalty_grads(reference_fn, ref_inputs, weights)
        for g, rg in zip(grads2, ref_grads2):
            # second-order terms amplify rounding: compare against the gradient's own scale
            scale = rg.abs().max().clamp_min(1.0)
            assert_close(g / scale.to(g.dtype), rg / scale, dtype, grad=True)
