import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import progan_fast
from progan_fast import _library, backends, reference
from progan_fast.ops import pixel_norm

from .parity import ONE_CHANNEL_SHAPES, SEEDS, assert_close, check_parity, families_of, layout, one_channel_input

# Every kernel family that runs on this machine's CPU tensors: cpu, emulated CUDA, triton (interpreted).
KERNEL_BACKENDS = families_of("pixel_norm")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [torch.contiguous_format, torch.channels_last]
SHAPES = [(2, 3, 5, 7), (3, 1, 4, 4), (2, 16, 1, 1), (4, 32, 8, 8), (1, 5, 3, 2)]
# ProGAN's 4x4 and 8x8 maps at 512 channels (small batches), where the GPU kernels give a pixel the most lanes: a
# block of 256 in both layouts (channels-last rows of single elements, float64's of 16-byte vectors), adding as a
# wide row. tests/gpu/test_cuda_emulation.py pins the geometry at N = 16 and 64 and runs the schedules in between.
SMALL_MAPS = [(4, 512, 4, 4), (2, 512, 8, 8)]


def test_cpu_kernel_is_built():
    assert backends.available("cpu") == (True, None)
    assert backends.resolve("pixel_norm", torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_parity_4d(backend, dtype, memory_format, shape):
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    check_parity(backend, pixel_norm, reference.pixel_norm, [x], dtype, op="pixel_norm")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SMALL_MAPS, ids=str)
def test_parity_small_maps(backend, dtype, memory_format, shape):
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    check_parity(backend, pixel_norm, reference.pixel_norm, [x], dtype, check_double_backward=False, op="pixel_norm")


def test_every_family_is_tested():
    assert {"cpu", "emulated"} <= set(KERNEL_BACKENDS)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", [((6, 9), 1), ((5, 512), -1), ((3, 4, 7), 1), ((3, 4, 7), 2), ((2, 3, 4, 5), 3)])
def test_parity_dim(backend, dtype, shape, dim):
    x = torch.randn(shape, dtype=dtype)
    check_parity(backend, lambda t: pixel_norm(t, dim=dim), lambda t: reference.pixel_norm(t, dim=dim), [x], dtype,
                 op="pixel_norm")


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
def test_large_odd_tensor(memory_format):
    """Outputs of 8 MiB and more take the CPU kernel's streaming-store path (odd sizes: unaligned heads/tails)."""
    x = layout(torch.randn(3, 64, 129, 131), memory_format)
    check_parity("cpu", pixel_norm, reference.pixel_norm, [x], torch.float32, check_double_backward=False)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_eps_and_scale(backend):
    x = torch.zeros(2, 4, 3, 3)
    with progan_fast.use_backend(backend):
        assert torch.equal(pixel_norm(x), x)  # eps keeps zero vectors at zero instead of NaN
        y = pixel_norm(torch.full((1, 4, 2, 2), 1e-3), eps=1e-4)
    assert_close(y, reference.pixel_norm(torch.full((1, 4, 2, 2), 1e-3, dtype=torch.float64), eps=1e-4), torch.float32)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
def test_gradcheck_and_gradgradcheck(backend, memory_format):
    x = layout(torch.randn(2, 5, 3, 4, dtype=torch.float64), memory_format).requires_grad_()
    with progan_fast.use_backend(backend):
        assert torch.autograd.gradcheck(pixel_norm, (x,))
        assert torch.autograd.gradgradcheck(pixel_norm, (x,))
        latents = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(pixel_norm, (latents,))


def test_backward_op_gradcheck():
    """The backward op's own autograd (the double backward) against finite differences, r held as a function of x."""
    def dx(dy, x):
        r = torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
        return torch.ops.progan_fast.pixel_norm_backward(dy, x, r, 1, 1e-8)

    dy = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    y, r = torch.ops.progan_fast.pixel_norm_forward(x, 1, 1e-8)
    # the analytic second-order formula differentiates through r's dependence on x: compare with autograd
    ref_x = x.detach().requires_grad_()
    ref_dx = torch.autograd.grad(reference.pixel_norm(ref_x), ref_x, dy, create_graph=True)[0]
    g = torch.randn_like(x)
    ours = torch.autograd.grad(torch.ops.progan_fast.pixel_norm_backward(dy, x, r.detach(), 1, 1e-8), (dy, x), g)
    theirs = torch.autograd.grad(ref_dx, (dy, ref_x), g)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert dx(dy, x).shape == x.shape


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ONE_CHANNEL_SHAPES, ids=str)
def test_one_channel(backend, dtype, shape):
    """Found by make sanitize: over one channel the backward's r * dy - x * r^3 * mean(dy * x) cancels to
    eps * r^3 * dy, and float32 left errors of a few ulp of r * |dy| in its place (1.5e-4 at |x| ~ 1e-2; the
    double backward had the same). Forward, gradient and double backward against the float64 reference."""
    double = dtype != torch.float16  # second derivatives of ~1e7 at |x| ~ 1e-4, beyond float16's range
    check_parity(backend, pixel_norm, reference.pixel_norm, [one_channel_input(shape, dtype)], dtype,
                 check_double_backward=double, op="pixel_norm")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_one_channel_gradcheck_and_gradgradcheck(backend):
    x = one_channel_input((2, 1, 3, 3), torch.float64).requires_grad_()
    latents = one_channel_input((5, 1), torch.float64).requires_grad_()
    with progan_fast.use_backend(backend):
        for t in (x, latents):
            assert torch.autograd.gradcheck(pixel_norm, (t,))
            assert torch.autograd.gradgradcheck(pixel_norm, (t,))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck(backend, memory_format, dtype):
    ops = _library.family_ops(backend)
    for shape in [(2, 8, 4, 4), (3, 1, 5, 2), (2, 3, 1, 1)]:
        for requires_grad in (False, True):
            x = layout(torch.randn(shape, dtype=dtype), memory_format).requires_grad_(requires_grad)
            torch.library.opcheck(ops.pixel_norm_forward.default, (x, 1, 1e-8))
            r = torch.rand(shape[0], 1, *shape[2:], dtype=torch.float32) + 0.5
            dy = layout(torch.randn(shape, dtype=dtype), memory_format)
            torch.library.opcheck(ops.pixel_norm_backward.default, (dy, x.detach(), r, 1, 1e-8))
    latents = torch.randn(4, 16, dtype=dtype, requires_grad=True)
    torch.library.opcheck(ops.pixel_norm_forward.default, (latents, 1, 1e-8))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_third_derivative(backend):
    """Every order is right, not only the second: the double backward re-attaches the saved rsqrt to x."""
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 2, 3, dtype=torch.float64)

    def input_gradient(t):
        return torch.autograd.grad((pixel_norm(t) * v).sum(), t, create_graph=True)[0]

    with progan_fast.use_backend(backend):
        assert torch.autograd.gradgradcheck(input_gradient, (x,))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_zero_channels_give_nan_statistic_like_the_reference(backend):
    x = torch.empty(3, 0, 4, 4)
    y, r = _library.family_ops(backend).pixel_norm_forward(x, 1, 1e-8)
    assert y.shape == x.shape and r.shape == (3, 1, 4, 4) and torch.isnan(r).all()
    assert torch.isnan(torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)).all()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_meta_or_mismatched_arguments_are_refused(backend):
    """A meta argument routes a call to the fake function: it must refuse what the kernels refuse."""
    ops = _library.family_ops(backend)
    x, g = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="rsqrt must be on cpu"):
        ops.pixel_norm_backward(g, x, torch.empty(4, 1, device="meta"), 1, 1e-8)
    with pytest.raises(RuntimeError, match="grad_y must be on cpu"):
        ops.pixel_norm_backward(torch.empty(4, 3, device="meta"), x, torch.ones(4, 1), 1, 1e-8)
    with pytest.raises(IndexError, match="dim must be in"):
        ops.pixel_norm_forward(torch.empty(2, 5, 1, device="meta"), 100, 1e-8)
    with pytest.raises(RuntimeError, match="grad_y must have x's shape"):
        ops.pixel_norm_backward(torch.empty(4, 2, device="meta"), torch.empty(4, 3, device="meta"),
                                torch.empty(4, 1, device="meta"), 1, 1e-8)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_raw_ops_refuse_int_tensors_a_foreign_rsqrt_and_bad_scalars(backend):
    """Found by tests/test_fuzz_raw_ops.py: an int rsqrt was read as its values (silently truncated statistics),
    an int x was accepted when empty, eps = NaN went through, and the C++ kernels' dim error named no argument."""
    ops = _library.family_ops(backend)
    x, g = torch.randn(4, 3), torch.randn(4, 3)
    r = torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
    for bad in (r.long(), r.double(), r.half()):
        with pytest.raises(TypeError, match="rsqrt must be"):
            ops.pixel_norm_backward(g, x, bad, 1, 1e-8)
    for bad in (torch.ones(0, 3, dtype=torch.int32), torch.ones(2, 3, dtype=torch.int64)):
        with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
            ops.pixel_norm_forward(bad, 1, 1e-8)
    with pytest.raises(ValueError, match="eps must be finite"):
        ops.pixel_norm_forward(x, 1, math.nan)
    with pytest.raises(IndexError, match="dim must be in"):
        ops.pixel_norm_forward(x, 5, 1e-8)
    with pytest.raises(IndexError, match="dim must be in"):
        ops.pixel_norm_backward(g, x, r, -3, 1e-8)


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
def test_compile_fullgraph(memory_format):
    torch._dynamo.reset()

    def fn(t):
        return pixel_norm(t * 2.0).square().sum()

    x = layout(torch.randn(2, 8, 4, 4), memory_format).requires_grad_()
    compiled = torch.compile(fn, fullgraph=True, backend="inductor")
    with progan_fast.use_backend("cpu"):
        expected = fn(x)
        (expected_grad,) = torch.autograd.grad(expected, x)
        got = compiled(x)
        (got_grad,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_grad, expected_grad)
    explanation = torch._dynamo.explain(fn)(x)
    assert explanation.graph_break_count == 0


def test_cpp_family_autograd_is_registered_in_cpp():
    """Python autograd costs ~0.1 ms a call at in-cache shapes; both orders must run C++ autograd nodes."""
    x = torch.randn(2, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    y, r = torch.ops.progan_fast.pixel_norm_forward(x, 1, 1e-8)
    assert "CppNode<" in y.grad_fn.name() and "PixelNormForward" in y.grad_fn.name()
    assert not r.requires_grad
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
    assert "CppNode<" in dx.grad_fn.name() and "PixelNormBackward" in dx.grad_fn.name()


def test_saves_only_input_and_one_rsqrt_per_pixel():
    x = torch.randn(2, 6, 3, 5, requires_grad=True)
    saved = []
    with progan_fast.use_backend("cpu"), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        pixel_norm(x)
    shapes = sorted(tuple(t.shape) for t in saved)
    assert shapes == sorted([(2, 6, 3, 5), (2, 1, 3, 5)])
    assert any(t.data_ptr() == x.data_ptr() for t in saved)


def test_input_not_mutated_and_noncontiguous_input():
    base = torch.randn(3, 10, 6, 6)
    x = base[:, ::2, 1:, :5]  # strided in every dimension: copied to contiguous, documented fallback
    before = x.clone()
    with progan_fast.use_backend("cpu"):
        y = pixel_norm(x)
    assert torch.equal(x, before)
    assert y.is_contiguous()
    assert_close(y, reference.pixel_norm(x.double()), torch.float32)


@pytest.mark.parametrize("call,error,match", [
    (lambda: pixel_norm([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
    (lambda: pixel_norm(torch.ones(2, 3, dtype=torch.int32)), TypeError, "x must be float16"),
    (lambda: pixel_norm(torch.ones(5)), ValueError, "x must have at least 2 dimensions"),
    (lambda: pixel_norm(torch.ones(2, 3), dim=2), ValueError, "dim must be in"),
    (lambda: pixel_norm(torch.ones(2, 3), dim=1.0), TypeError, "dim must be an int"),
    (lambda: pixel_norm(torch.ones(2, 3), eps=float("nan")), ValueError, "eps must be finite"),
    (lambda: pixel_norm(torch.ones(2, 3), eps=-1.0), ValueError, "eps must be >= 0"),
    (lambda: pixel_norm(torch.ones(0, 3, 2, 2)), ValueError, "x has an empty batch"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@st.composite
def strided_inputs(draw):
    ndim = draw(st.sampled_from([2, 3, 4]))
    shape = [draw(st.integers(1, 6)) for _ in range(ndim)]
    dtype = draw(st.sampled_from(DTYPES))
    dim = draw(st.integers(-ndim, ndim - 1))
    seed = draw(SEEDS)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([s * 2 for s in shape], dtype=torch.float64, generator=gen).to(dtype)
    # random strides: a step-2 slice in some dimensions, a permutation, or channels_last
    index = tuple(slice(None, None, 2) if draw(st.booleans()) else slice(0, s) for s in shape)
    x = x[index]
    if draw(st.booleans()):
        perm = draw(st.permutations(range(ndim)))
        x = x.permute(*perm).contiguous().permute(*[perm.index(i) for i in range(ndim)])
    elif ndim == 4 and draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, dim, seed


@settings(max_examples=60, deadline=None)
@given(strided_inputs())
def test_property_random_shapes_strides_dtypes(case):
    x, dim, _ = case
    with progan_fast.use_backend("cpu"):
        y = pixel_norm(x, dim=dim)
    assert_close(y, reference.pixel_norm(x.double(), dim=dim), x.dtype)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=3), st.none()),
       st.one_of(st.integers(-6, 6), st.floats(allow_nan=True), st.none()))
def test_property_invalid_arguments_raise_clear_errors(dim, eps):
    x = torch.randn(2, 3, 4, 4)
    try:
        y = pixel_norm(x, dim=dim, eps=eps)
    except (TypeError, ValueError) as e:
        assert "dim" in str(e) or "eps" in str(e)
    else:
        assert isinstance(dim, int) and -4 <= dim < 4
        assert isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0
        assert y.shape == x.shape


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backward_op_rejects_mismatched_operands(backend):
    """The registered backward op is callable directly: operands it would read out of bounds are refused."""
    op = _library.family_ops(backend).pixel_norm_backward
    x = torch.randn(2, 4, 3, 3)
    r = torch.rand(2, 1, 3, 3) + 0.5
    with pytest.raises(TypeError, match="grad_y must have x's dtype"):
        op(torch.randn(2, 4, 3, 3, dtype=torch.float64), x, r, 1, 1e-8)
    with pytest.raises(RuntimeError, match="grad_y must have x's shape"):
        op(torch.randn(2, 4, 3, 2), x, r, 1, 1e-8)
    with pytest.raises(RuntimeError, match=r"rsqrt must have one value per reduced vector \(18\)"):
        op(torch.randn(2, 4, 3, 3), x, r[:1], 1, 1e-8)


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
def test_double_backward_formula_refuses_a_misshaped_gradient(namespace):
    """The double-backward raw op is a composite of torch ops: without the check a wrongly shaped g would broadcast
    into a wrong result instead of an error."""
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    rsqrt = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    ops = getattr(torch.ops, namespace)
    with pytest.raises(RuntimeError, match="g must have x's shape"):
        ops.pixel_norm_double_backward(x[:1], x, x, rsqrt, 1, 1e-8)
    with pytest.raises(RuntimeError, match="grad_y must have x's shape"):
        ops.pixel_norm_double_backward(x, x[:1], x, rsqrt, 1, 1e-8)
    with pytest.raises(TypeError, match="g must have x's dtype torch.float64"):
        ops.pixel_norm_double_backward(x.float(), x, x, rsqrt, 1, 1e-8)


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
def test_double_backward_formula_takes_rsqrt_of_any_shape(namespace):
    """Found by tests/test_fuzz_raw_ops.py: the backward kernels read rsqrt as one value per vector whatever its
    shape, the formula broadcast it as shaped (a wrong result, or an error naming no argument)."""
    ops = getattr(torch.ops, namespace)
    gen = torch.Generator().manual_seed(0)
    g, grad_y, x = torch.randn(3, 2, 4, 3, 3, dtype=torch.float64, generator=gen)
    rsqrt = torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
    expected = ops.pixel_norm_double_backward(g, grad_y, x, rsqrt, 1, 1e-8)
    for shape in ((18,), (2, 9), (2, 3, 3, 1)):
        torch.testing.assert_close(ops.pixel_norm_double_backward(g, grad_y, x, rsqrt.reshape(shape), 1, 1e-8),
                                   expected)


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
def test_double_backward_formula_with_one_element_per_vector(namespace):
    """Found by tests/test_fuzz_raw_ops.py: with one element per vector every output is a multiple of
    1 - r^2 x^2 = eps r^2, which float32 math left as its rounding (2 % errors at |x| ~ 0.1)."""
    ops = getattr(torch.ops, namespace)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 1, 4, 4, generator=gen) * 0.2 + 0.02) * torch.randn(2, 1, 4, 4, generator=gen).sign()
    g, grad_y = torch.randn(2, 2, 1, 4, 4, generator=gen)
    rsqrt = torch.rsqrt(x.double().square() + 1e-8).float()
    got = ops.pixel_norm_double_backward(g, grad_y, x, rsqrt, 1, 1e-8)
    expected = ops.pixel_norm_double_backward(g.double(), grad_y.double(), x.double(), rsqrt.double(), 1, 1e-8)
    for o, e in zip(got, expected):
        assert_close(o, e, torch.float32, grad=True)
