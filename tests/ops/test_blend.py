"""upsample_blend and fade_reals over every kernel family (cpu, emulated CUDA, interpreted Triton).

Both ops are linear, so a gradient penalty through them alone has nothing to differentiate (its gradient does not
depend on the inputs): their higher derivatives are checked with gradgradcheck and through the backward op."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import progan_fast
from progan_fast import _library, backends, reference
from progan_fast.ops import fade_reals, upsample_blend

from .parity import SEEDS, assert_close, check_parity, families_of, layout

UP_BACKENDS = families_of("upsample_blend")
REALS_BACKENDS = families_of("fade_reals")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [torch.contiguous_format, torch.channels_last]
LAYOUT_IDS = ["nchw", "channels_last"]
# (low shape, factor): odd sizes, one pixel, a single channel, RGB, factors 1 (a plain lerp) to 8
UP_CASES = [((1, 1, 1, 1), 2), ((3, 2, 3, 5), 2), ((2, 3, 2, 3), 4), ((1, 3, 1, 2), 8), ((2, 3, 3, 2), 1)]
REALS_SHAPES = [(1, 1, 2, 2), (3, 2, 6, 10), (2, 3, 2, 8)]


def up_loop(x, factor=2):
    n, c, h, w = x.shape
    out = x.new_empty(n, c, factor * h, factor * w)
    for i in range(factor * h):
        for j in range(factor * w):
            out[:, :, i, j] = x[:, :, i // factor, j // factor]
    return out


def down_loop(x):
    n, c, h, w = x.shape
    out = x.new_empty(n, c, h // 2, w // 2)
    for i in range(h // 2):
        for j in range(w // 2):
            out[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].sum((2, 3)) / 4
    return out


def as_alpha(value, kind):
    return torch.tensor(value, dtype=torch.float64) if kind == "tensor" else value


def test_cpu_kernels_are_built():
    for op in ("upsample_blend", "fade_reals"):
        assert backends.resolve(op, torch.device("cpu")) == "cpu"


def test_every_family_is_tested():
    assert {"cpu", "emulated"} <= set(UP_BACKENDS) and {"cpu", "emulated"} <= set(REALS_BACKENDS)


@pytest.mark.parametrize("backend", UP_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("shape,factor", UP_CASES, ids=str)
def test_upsample_blend_parity(backend, dtype, memory_format, shape, factor):
    n, c, h, w = shape
    low = layout(torch.randn(shape, dtype=dtype), memory_format)
    high = layout(torch.randn(n, c, factor * h, factor * w, dtype=dtype), memory_format)
    alpha = torch.tensor(0.3) if dtype == torch.float32 else 0.7
    check_parity(backend, lambda lo, hi: upsample_blend(lo, hi, alpha, factor),
                 lambda lo, hi: reference.upsample_blend(lo, hi, alpha, factor), [low, high], dtype,
                 check_double_backward=False, op="upsample_blend")


@pytest.mark.parametrize("backend", REALS_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("shape", REALS_SHAPES, ids=str)
def test_fade_reals_parity(backend, dtype, memory_format, shape):
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    alpha = 0.3 if dtype == torch.float32 else torch.tensor(0.8, dtype=torch.float32)
    check_parity(backend, lambda t: fade_reals(t, alpha), lambda t: reference.fade_reals(t, alpha), [x], dtype,
                 check_double_backward=False, op="fade_reals")


@pytest.mark.parametrize("backend", UP_BACKENDS)
@pytest.mark.parametrize("alpha,kind", [(0.25, "float"), (0.5, "tensor"), (0.7, "tensor"), (0.0, "float")])
def test_formulas_float64(backend, alpha, kind):
    low = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    high = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    a = as_alpha(alpha, kind)
    with progan_fast.use_backend(backend):
        torch.testing.assert_close(upsample_blend(low, high, a), up_loop(low) + (high - up_loop(low)) * alpha)
        torch.testing.assert_close(upsample_blend(low, up_loop(high, 4), a, 8),
                                   up_loop(low, 8) + (up_loop(high, 4) - up_loop(low, 8)) * alpha)
        torch.testing.assert_close(fade_reals(high, a),
                                   up_loop(down_loop(high)) + (high - up_loop(down_loop(high))) * alpha)


@pytest.mark.parametrize("backend", UP_BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_endpoints_are_exact(backend, memory_format):
    low = layout(torch.randn(2, 3, 4, 4), memory_format)
    high = layout(torch.randn(2, 3, 8, 8), memory_format)
    with progan_fast.use_backend(backend):
        assert torch.equal(upsample_blend(low, high, 1.0), high)
        assert torch.equal(upsample_blend(low, high, torch.tensor(0.0)), up_loop(low))
        assert torch.equal(fade_reals(high, 1.0), high)
        assert torch.equal(fade_reals(up_loop(low), 0.0), up_loop(low))


@pytest.mark.parametrize("backend", UP_BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_gradcheck_and_gradgradcheck(backend, memory_format):
    low = layout(torch.randn(2, 3, 2, 3, dtype=torch.float64), memory_format).requires_grad_()
    high = layout(torch.randn(2, 3, 4, 6, dtype=torch.float64), memory_format).requires_grad_()
    fast = backend == "triton"  # random projections of the Jacobians: the full ones take half a minute interpreted
    with progan_fast.use_backend(backend):
        for fn, args in [(lambda lo, hi: upsample_blend(lo, hi, 0.3), (low, high)),
                         (lambda lo, hi: upsample_blend(lo, hi, 0.6, 1), (high, high.detach().clone().requires_grad_())),
                         (lambda hi: fade_reals(hi, torch.tensor(0.3)), (high,))]:
            assert torch.autograd.gradcheck(fn, args, fast_mode=fast)
            assert torch.autograd.gradgradcheck(fn, args, fast_mode=fast)


@pytest.mark.parametrize("backend", UP_BACKENDS)
def test_backward_op_is_differentiable(backend):
    """upsample_blend's backward op has its own derivative (the forward, its adjoint), to every order."""
    ops = _library.family_ops(backend)
    alpha = torch.tensor(0.35, dtype=torch.float64)
    g = torch.randn(2, 2, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.upsample_blend_backward(t, alpha, 2), (g,))
    assert torch.autograd.gradgradcheck(lambda t: ops.upsample_blend_backward(t, alpha, 2), (g,))


def test_differentiable_alpha_runs_the_reference():
    """The kernels treat alpha as a constant: an alpha that requires grad is computed by the reference, and the raw
    op refuses one instead of silently dropping its gradient."""
    low = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    high = torch.randn(2, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(upsample_blend, (low, high, alpha))
    assert torch.autograd.gradcheck(fade_reals, (high, alpha))
    for family in ("cpu", "emulated"):
        ops = _library.family_ops(family)
        with pytest.raises(RuntimeError, match="alpha must not require grad"):
            ops.upsample_blend_forward(low, high, alpha, 2).sum().backward()
        with pytest.raises(RuntimeError, match="alpha must not require grad"):
            ops.fade_reals_forward(high, alpha).sum().backward()


def test_saves_nothing_but_alpha():
    low = torch.randn(2, 3, 8, 8, requires_grad=True)
    high = torch.randn(2, 3, 16, 16, requires_grad=True)
    saved = []
    with progan_fast.use_backend("cpu"), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        upsample_blend(low, high, 0.5)
        fade_reals(high, 0.5)
    assert [t.dim() for t in saved] == [0, 0]


@pytest.mark.parametrize("backend", UP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck(backend, dtype):
    ops = _library.family_ops(backend)
    alpha = torch.tensor(0.4)
    for memory_format in LAYOUTS:
        for (n, c, h, w), f in [((2, 3, 2, 3), 2), ((1, 1, 1, 1), 4), ((2, 4, 3, 1), 1)]:
            low = layout(torch.randn(n, c, h, w, dtype=dtype), memory_format)
            high = layout(torch.randn(n, c, f * h, f * w, dtype=dtype), memory_format)
            for requires_grad in (False, True):
                args = (low.requires_grad_(requires_grad), high.requires_grad_(requires_grad), alpha, f)
                torch.library.opcheck(ops.upsample_blend_forward.default, args)
            torch.library.opcheck(ops.upsample_blend_backward.default, (high.detach(), alpha, f))
        for shape in [(2, 3, 2, 4), (1, 1, 2, 2)]:
            for requires_grad in (False, True):
                x = layout(torch.randn(shape, dtype=dtype), memory_format).requires_grad_(requires_grad)
                torch.library.opcheck(ops.fade_reals_forward.default, (x, alpha))


def test_compile_fullgraph_tensor_alpha_does_not_recompile():
    torch._dynamo.reset()
    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    def fn(lo, hi, a):
        return (upsample_blend(lo * 2.0, hi, a) * fade_reals(hi, a)).sum()

    low = torch.randn(2, 3, 4, 4, requires_grad=True)
    high = torch.randn(2, 3, 8, 8, requires_grad=True)
    compiled = torch.compile(fn, fullgraph=True, backend=counting_backend)
    with progan_fast.use_backend("cpu"):
        for a in (0.2, 0.5, 0.9):
            alpha = torch.tensor(a)
            got = compiled(low, high, alpha)
            expected = fn(low, high, alpha)
            torch.testing.assert_close(got, expected)
            torch.testing.assert_close(torch.autograd.grad(got, (low, high)), torch.autograd.grad(expected, (low, high)))
        assert len(compiles) == 1
        with pytest.raises(RuntimeError, match="alpha must be finite and in \\[0, 1\\]"):
            compiled(low, high, torch.tensor(1.5))
    explanation = torch._dynamo.explain(fn)(low, high, torch.tensor(0.3))
    assert explanation.graph_break_count == 0


def test_compile_inductor_matches_eager():
    torch._dynamo.reset()
    low = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    high = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()

    def fn(lo, hi, a):
        return fade_reals(upsample_blend(lo, hi, a), a).square().sum()

    with progan_fast.use_backend("cpu"):
        expected = fn(low, high, torch.tensor(0.4))
        got = torch.compile(fn, fullgraph=True, backend="inductor")(low, high, torch.tensor(0.4))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend", UP_BACKENDS)
def test_inputs_not_mutated_and_any_strides(backend):
    base = torch.randn(2, 6, 9, 12)
    low = base[:, ::2, :3, 1:4]      # strided in every dimension: copied to contiguous, documented fallback
    high = torch.randn(2, 3, 6, 6).transpose(2, 3)
    low_before, high_before = low.clone(), high.clone()
    with progan_fast.use_backend(backend):
        y = upsample_blend(low, high, 0.4)
        r = fade_reals(high, 0.4)
    assert torch.equal(low, low_before) and torch.equal(high, high_before)
    assert y.is_contiguous() and r.is_contiguous()
    assert_close(y, reference.upsample_blend(low.double(), high.double(), 0.4), torch.float32)
    assert_close(r, reference.fade_reals(high.double(), 0.4), torch.float32)


def test_mixed_layouts_follow_the_high_resolution_tensor():
    low = torch.randn(2, 3, 4, 4)
    high = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = upsample_blend(low, high, 0.4)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, reference.upsample_blend(low.double(), high.double(), 0.4), torch.float32)
    (grad_low,) = torch.autograd.grad(upsample_blend(low.requires_grad_(), high, 0.4), low, torch.ones_like(y))
    torch.testing.assert_close(grad_low, torch.full_like(low, 4 * 0.6))


@pytest.mark.parametrize("alpha,exc", [
    (math.nan, ValueError), (math.inf, ValueError), (-0.1, ValueError), (1.5, ValueError), (True, TypeError),
    ("0.5", TypeError), (torch.tensor([0.5]), ValueError), (torch.tensor(1), TypeError),
    (torch.tensor(math.nan), ValueError), (torch.tensor(2.0), ValueError)], ids=repr)
def test_bad_alpha(alpha, exc):
    low, high = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)
    for call in (lambda: upsample_blend(low, high, alpha), lambda: fade_reals(high, alpha)):
        with pytest.raises(exc, match="alpha"):
            call()


@pytest.mark.parametrize("backend", UP_BACKENDS)
def test_raw_ops_check_alpha(backend):
    """The raw ops, callable directly, refuse a bad alpha operand too (its value wherever that needs no device sync:
    a CPU alpha)."""
    ops = _library.family_ops(backend)
    low, high = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 4, 4)
    with pytest.raises(RuntimeError, match="alpha must be a 0-dim floating tensor"):
        ops.upsample_blend_forward(low, high, torch.tensor([0.5]), 2)
    with pytest.raises(RuntimeError, match="alpha must be a 0-dim floating tensor"):
        ops.fade_reals_forward(high, torch.tensor(1))
    with pytest.raises(ValueError, match="alpha must be finite and in \\[0, 1\\]"):
        ops.upsample_blend_forward(low, high, torch.tensor(-0.5), 2)
    with pytest.raises(ValueError, match="alpha must be finite and in \\[0, 1\\]"):
        ops.fade_reals_forward(high, torch.tensor(math.nan))


LOW, HIGH = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("low,high,factor,exc,name", [
    (LOW, torch.randn(2, 3, 8, 7), 2, ValueError, "high"),
    (LOW, torch.randn(2, 4, 8, 8), 2, ValueError, "high"),
    (LOW, torch.randn(3, 3, 8, 8), 2, ValueError, "high"),
    (LOW, HIGH, 4, ValueError, "high"),
    (LOW, HIGH, 3, ValueError, "factor"),
    (LOW, HIGH, 0, ValueError, "factor"),
    (LOW, HIGH, 2.0, TypeError, "factor"),
    (LOW[0], HIGH, 2, ValueError, "low"),
    (LOW, HIGH[0], 2, ValueError, "high"),
    (LOW.double(), HIGH, 2, TypeError, "low"),
    (LOW.to("meta"), HIGH, 2, ValueError, "low"),
    (LOW[:0], HIGH[:0], 2, ValueError, "low"),
    (LOW.int(), HIGH, 2, TypeError, "low"),
])
def test_bad_pairs(low, high, factor, exc, name):
    with pytest.raises(exc, match=name):
        upsample_blend(low, high, 0.5, factor)


@pytest.mark.parametrize("x,exc", [(torch.randn(2, 3, 5, 4), ValueError), (torch.randn(2, 3, 4, 3), ValueError),
                                   (torch.randn(3, 4, 4), ValueError), (torch.randn(0, 3, 4, 4), ValueError),
                                   (torch.ones(1, 3, 4, 4, dtype=torch.uint8), TypeError)])
def test_fade_reals_bad_x(x, exc):
    with pytest.raises(exc, match="x"):
        fade_reals(x, 0.5)


@pytest.mark.parametrize("backend", UP_BACKENDS)
def test_raw_ops_refuse_int_tensors_even_empty(backend):
    """Found by tests/test_fuzz_raw_ops.py: an empty int or bool tensor was accepted (the kernels returned before
    looking at the dtype)."""
    ops = _library.family_ops(backend)
    alpha = torch.tensor(0.5)
    with pytest.raises(TypeError, match="grad_y must be float16, bfloat16, float32 or float64"):
        ops.upsample_blend_backward(torch.zeros(0, 4, 4, 4, dtype=torch.bool), alpha, 2)
    with pytest.raises(TypeError, match="(low|high) must be float16, bfloat16, float32 or float64"):
        ops.upsample_blend_forward(torch.zeros(0, 4, 2, 2, dtype=torch.int32), torch.zeros(0, 4, 4, 4, dtype=torch.int32),
                                   alpha, 2)
    with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
        ops.fade_reals_forward(torch.zeros(0, 4, 2, 2, dtype=torch.int32), alpha)


@st.composite
def blend_inputs(draw):
    n, c, h, w = (draw(st.integers(1, 4)) for _ in range(4))
    factor = draw(st.sampled_from([1, 2, 4]))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(SEEDS)
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(n, c, h, w, dtype=torch.float64, generator=gen).to(dtype)
    high = torch.randn(n, c, factor * h, factor * w, dtype=torch.float64, generator=gen).to(dtype)
    memory_format = draw(st.sampled_from(LAYOUTS))
    low, high = layout(low, memory_format), layout(high, memory_format)
    if draw(st.booleans()):  # a non-dense view of the high tensor
        high = torch.cat([high, high], 3)[..., ::2]
    alpha = draw(st.floats(0.0, 1.0))
    return low, high, factor, draw(st.sampled_from([alpha, torch.tensor(alpha)])), seed


@settings(max_examples=40, deadline=None)
@given(blend_inputs())
def test_property_random_shapes_strides_dtypes(case):
    low, high, factor, alpha, _ = case
    with progan_fast.use_backend("cpu"):
        y = upsample_blend(low, high, alpha, factor)
        r = fade_reals(torch.cat([high, high], 2), alpha) if high.shape[3] % 2 == 0 else None
    assert_close(y, reference.upsample_blend(low.double(), high.double(), alpha, factor), low.dtype)
    if r is not None:
        assert_close(r, reference.fade_reals(torch.cat([high, high], 2).double(), alpha), low.dtype)
