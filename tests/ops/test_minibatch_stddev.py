import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import progan_fast
from progan_fast import _library, backends, reference
from progan_fast.nn import MinibatchStddev
from progan_fast.ops import minibatch_stddev

from .parity import SEEDS, assert_close, check_parity, families_of, layout

# Every kernel family that runs on this machine's CPU tensors: cpu, emulated CUDA, triton (interpreted).
KERNEL_BACKENDS = families_of("minibatch_stddev")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [torch.contiguous_format, torch.channels_last]
LAYOUT_IDS = ["nchw", "channels_last"]
# (grouping, unbiased) of each convention the op reproduces.
CONVENTIONS = {"tf": ("strided", False), "gan_zoo": ("contiguous", True)}
BATCHES = [1, 2, 3, 4, 5, 8, 16]
GROUP_SIZES = [1, 2, 4, 8]


def defined(n, group_size, grouping):
    """TF official's strided grouping needs a batch of at most, or a multiple of, the group size."""
    return grouping == "contiguous" or n <= group_size or n % group_size == 0


def zero_statistic(n, group_size, grouping):
    """pytorch_GAN_zoo's contiguous groups of one sample (after a batch it does not divide becomes one group)."""
    g = min(group_size, n)
    return grouping == "contiguous" and g == 1 and n % g == 0


def shape_for(n, features):
    """Odd sizes: C*H*W odd for one map; K = C/F*H*W odd for two."""
    return (n, 3 * features, 3, 5)


def op_and_reference(group_size, convention, features, eps=1e-8):
    grouping, unbiased = CONVENTIONS[convention]
    return (lambda t: minibatch_stddev(t, group_size, grouping, unbiased, eps, features),
            lambda t: reference.minibatch_stddev(t, group_size, grouping, unbiased, eps, features))


# ---- the spec against explicit loops ----

def group_stat(x, members, channels, unbiased, eps=1e-8):
    """mean over `channels`, h, w of sqrt(var over the group's samples + eps), by explicit loops over positions."""
    n, c, h, w = x.shape
    total = 0.0
    for ci in channels:
        for hi in range(h):
            for wi in range(w):
                values = [float(x[m, ci, hi, wi]) for m in members]
                mean = sum(values) / len(values)
                ss = sum((v - mean) ** 2 for v in values)
                total += math.sqrt(ss / (len(values) - (1 if unbiased else 0)) + eps)
    return total / (len(channels) * h * w)


def channel_groups(c, features):
    return [range(f * c // features, (f + 1) * c // features) for f in range(features)]


def strided_loop(x, group_size, unbiased=False, features=1):
    """TF official / NVlabs: G = min(group_size, N), M = N / G, group of sample n = {n mod M + k M}; F channel
    groups of C/F consecutive channels. Returns [N, F]."""
    n, c = x.shape[:2]
    g = min(group_size, n)
    m = n // g
    stats = [[group_stat(x, [j + k * m for k in range(g)], chans, unbiased) for chans in channel_groups(c, features)]
             for j in range(m)]
    return torch.tensor([stats[i % m] for i in range(n)], dtype=torch.float64)


def contiguous_loop(x, group_size, unbiased=True, features=1):
    """pytorch_GAN_zoo: G = min(group_size, N), G = N if N mod G != 0, zeros if G == 1, groups {jG .. jG+G-1}."""
    n, c = x.shape[:2]
    g = min(group_size, n)
    if n % g:
        g = n
    if g == 1:
        return torch.zeros(n, features, dtype=torch.float64)
    return torch.tensor([[group_stat(x, range(i // g * g, i // g * g + g), chans, unbiased)
                          for chans in channel_groups(c, features)] for i in range(n)], dtype=torch.float64)


def check_output(y, x, per_sample):
    n, c, h, w = x.shape
    features = per_sample.shape[1]
    assert y.shape == (n, c + features, h, w)
    assert torch.equal(y[:, :c], x)
    torch.testing.assert_close(y[:, c:].double(), per_sample.view(n, features, 1, 1).expand(n, features, h, w),
                               rtol=1e-12, atol=1e-12)


def test_cpu_kernel_serves_cpu_tensors():
    assert backends.available("cpu") == (True, None)
    assert backends.resolve("minibatch_stddev", torch.device("cpu")) == "cpu"


def test_every_family_is_tested():
    assert {"cpu", "emulated"} <= set(KERNEL_BACKENDS)


STRIDED_CASES = [(1, 4), (2, 4), (3, 4), (4, 4), (8, 4), (12, 4), (6, 2), (6, 3), (5, 1), (4, 16)]


@pytest.mark.parametrize("backend", ["reference"] + KERNEL_BACKENDS)
@pytest.mark.parametrize("features", [1, 2])
@pytest.mark.parametrize("n,group_size,unbiased", [(n, g, False) for n, g in STRIDED_CASES] +
                         [(n, g, True) for n, g in STRIDED_CASES if min(n, g) > 1])  # groups of 1: see bad args
def test_strided_against_loops(backend, features, n, group_size, unbiased):
    x = torch.randn(n, 2 * features, 2, 3, dtype=torch.float64)
    with progan_fast.use_backend(backend):
        y = minibatch_stddev(x, group_size, "strided", unbiased, num_new_features=features)
    check_output(y, x, strided_loop(x, group_size, unbiased, features))


def test_strided_groups_are_not_contiguous():
    # samples 0 and 1 identical, 2 and 3 identical: strided pairs {0,2}, {1,3} differ, contiguous pairs {0,1} do not
    a, b = torch.randn(1, 2, 2, 2, dtype=torch.float64), torch.randn(1, 2, 2, 2, dtype=torch.float64)
    x = torch.cat([a, a, b, b])
    strided = minibatch_stddev(x, 2, "strided")[:, 2, 0, 0]
    contiguous = minibatch_stddev(x, 2, "contiguous", unbiased=False)[:, 2, 0, 0]
    assert (strided > 0.01).all()
    torch.testing.assert_close(contiguous, torch.full((4,), 1e-4, dtype=torch.float64))


def test_channel_groups_are_consecutive_channels():
    # channels 0-1 vary across samples, channels 2-3 do not: F=2 gives a large first map and sqrt(eps) in the second
    x = torch.zeros(4, 4, 2, 2, dtype=torch.float64)
    x[:, :2] = torch.randn(4, 2, 2, 2, dtype=torch.float64)
    y = minibatch_stddev(x, 4, num_new_features=2)
    assert (y[:, 4] > 0.01).all()
    torch.testing.assert_close(y[:, 5], torch.full((4, 2, 2), 1e-4, dtype=torch.float64))


@pytest.mark.parametrize("backend", ["reference"] + KERNEL_BACKENDS)
@pytest.mark.parametrize("features", [1, 2])
@pytest.mark.parametrize("n,group_size", [(1, 4), (2, 4), (3, 4), (4, 4), (8, 4), (6, 4), (7, 4), (6, 2), (5, 1)])
@pytest.mark.parametrize("unbiased", [True, False])
def test_contiguous_against_loops(backend, features, n, group_size, unbiased):
    x = torch.randn(n, 2 * features, 3, 2, dtype=torch.float64)
    with progan_fast.use_backend(backend):
        y = minibatch_stddev(x, group_size, "contiguous", unbiased, num_new_features=features)
    check_output(y, x, contiguous_loop(x, group_size, unbiased, features))


# ---- every family against the reference ----

# Every batch size and group size of the issue, both conventions, one and two maps. The interpreted Triton family
# (about 0.5 s a case) runs the cases that reach each of its code paths: one group, several groups, strided and
# contiguous membership, groups of one, a batch the group size does not divide.
SWEEP = [(n, g, conv, f) for n in BATCHES for g in GROUP_SIZES for conv in CONVENTIONS for f in (1, 2)
         if defined(n, g, CONVENTIONS[conv][0])]
TRITON_SWEEP = {(n, g) for n, g in [(1, 4), (3, 2), (3, 4), (5, 1), (5, 4), (8, 2), (16, 8)]}


def sweep_cases():
    for backend in KERNEL_BACKENDS:
        for n, g, conv, f in SWEEP:
            if backend == "triton" and (n, g) not in TRITON_SWEEP:
                continue
            yield pytest.param(backend, n, g, conv, f, id=f"{backend}-N{n}-G{g}-{conv}-F{f}")


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("backend,n,group_size,convention,features", list(sweep_cases()))
def test_conventions(backend, n, group_size, convention, features, memory_format):
    fn, ref = op_and_reference(group_size, convention, features)
    x = layout(torch.randn(shape_for(n, features), dtype=torch.float64), memory_format)
    # a zero statistic does not depend on x: the reference's penalty has no graph to differentiate
    double = not zero_statistic(n, group_size, CONVENTIONS[convention][0])
    check_parity(backend, fn, ref, [x], torch.float64, check_double_backward=double, op="minibatch_stddev")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("features", [1, 2])
def test_dtypes(backend, dtype, memory_format, convention, features):
    n = 8 if convention == "tf" else 6  # 6: contiguous groups of 4 do not divide it, one group of 6
    fn, ref = op_and_reference(4, convention, features)
    x = layout(torch.randn(n, 4 * features, 5, 3, dtype=dtype), memory_format)
    check_parity(backend, fn, ref, [x], dtype, op="minibatch_stddev")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_low_precision_statistics_in_float32(dtype, convention):
    # squares of ~300 overflow float16 (max 65504); float32 statistics do not
    grouping, unbiased = CONVENTIONS[convention]
    x = (300 * torch.randn(8, 4, 3, 3)).to(dtype)
    for backend in ["reference"] + KERNEL_BACKENDS:
        with progan_fast.use_backend(backend):
            y = minibatch_stddev(x, 4, grouping, unbiased)
        assert y.dtype == dtype and torch.isfinite(y).all()
        assert_close(y, minibatch_stddev(x.double(), 4, grouping, unbiased), dtype)


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_large_odd_tensor(memory_format):
    """Outputs of 8 MiB and more take the CPU kernel's streaming-store path (odd sizes: unaligned rows)."""
    x = layout(torch.randn(4, 63, 129, 131), memory_format)
    for convention in CONVENTIONS:
        fn, ref = op_and_reference(2, convention, 1)
        check_parity("cpu", fn, ref, [x], torch.float32, check_double_backward=False, op="minibatch_stddev")


# channels_last outputs of 8 MiB and more, float32, channel groups of a multiple of 16 and F < 16: the CPU kernel's
# forward streams y in whole lines (AVX-512), each chunk straddling a pixel's end holding its last channels, the F
# slots and the next pixel's first channels; the members' rows start at different lanes of their lines (C + F odd
# or H * W odd), tasks end mid-line. (shape, F): one map; two; fifteen (the slots fill a chunk of their own after
# a pixel ending at lane 1 or more); 1 x 2 maps of 4096 channels (a task is one pixel: its first is its last) and
# 2 x 2 maps.
STREAMED_ROWS = [((4, 32, 129, 131), 1), ((4, 64, 129, 67), 2), ((4, 240, 47, 49), 15), ((256, 4096, 1, 2), 1),
                 ((1024, 512, 2, 2), 1)]


@pytest.mark.parametrize("shape,features", STREAMED_ROWS,
                         ids=[f"{'x'.join(map(str, s))}-F{f}" for s, f in STREAMED_ROWS])
def test_streamed_channels_last_rows(shape, features):
    x = layout(torch.randn(shape), torch.channels_last)
    fn, ref = op_and_reference(4, "tf", features)
    check_parity("cpu", fn, ref, [x], torch.float32, check_double_backward=False, op="minibatch_stddev")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_zero_statistic_is_exact(backend):
    """Contiguous groups of one give zero maps and dx = grad_y[:, :C] exactly, whatever eps (even 0)."""
    x = torch.randn(5, 4, 3, 3, requires_grad=True)
    dy = torch.randn(5, 6, 3, 3)
    with progan_fast.use_backend(backend):
        y = minibatch_stddev(x, 1, "contiguous", True, 0.0, 2)
        (dx,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(y[:, :4], x) and torch.equal(y[:, 4:], torch.zeros(5, 2, 3, 3))
    assert torch.equal(dx, dy[:, :4])


def test_same_result_for_any_thread_count():
    """Partial sums are added in a fixed order: the statistic does not depend on how the work was split."""
    x = torch.randn(8, 64, 33, 35)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = minibatch_stddev(x, 4)
        torch.set_num_threads(max(2, threads))
        many = minibatch_stddev(x, 4)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@pytest.mark.parametrize("memory_format,maps", [(torch.contiguous_format, (1, 1)), (torch.channels_last, (1, 2))],
                         ids=LAYOUT_IDS)
@pytest.mark.parametrize("group_size", [2, 3, 4, 5, 8])
def test_backward_same_bits_at_every_position(memory_format, maps, group_size):
    """The CPU kernel's float32 backward takes whole vectors of 16 positions (channels, in channels_last) with the
    members' x in registers and the rest through its block loop: a position whose values repeat those of a
    vectorised one gets the same bits (the register loop once fused the mean's product into the subtractions,
    other bits where 1 / G is inexact). 31 channels: 0-15 a vector, 16-30 (repeating 0-14) the rest."""
    n = 4 * group_size
    x = torch.randn(n, 16, *maps) * 3 + 1
    dy = torch.randn(n, 16, *maps)
    x = layout(torch.cat([x, x[:, :15]], 1), memory_format)
    dy = layout(torch.cat([dy, dy[:, :15], torch.randn(n, 1, *maps)], 1), memory_format)
    dx = torch.ops.progan_fast.minibatch_stddev_backward(dy, x, group_size, "strided", False, 1e-8, 1)
    assert torch.equal(dx[:, 16:], dx[:, :15])


# ---- autograd ----

@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("n,group_size,convention,features", [(4, 4, "tf", 1), (8, 4, "tf", 2), (6, 4, "gan_zoo", 1),
                                                              (4, 2, "gan_zoo", 2), (3, 8, "tf", 1)])
def test_gradcheck_gradgradcheck(backend, memory_format, n, group_size, convention, features):
    fn, _ = op_and_reference(group_size, convention, features)
    x = layout(torch.randn(n, 2 * features, 2, 3, dtype=torch.float64), memory_format).requires_grad_()
    # The interpreted Triton family checks random projections of the Jacobians (fast_mode): the full check
    # launches the kernels hundreds of times, minutes under the interpreter.
    fast = backend == "triton"
    with progan_fast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=fast)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_third_derivative(backend, convention):
    """Every order is right, not only the second: the double backward recomputes sigma from x in torch ops."""
    fn, _ = op_and_reference(2, convention, 2)
    x = torch.randn(4, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 6, 2, 2, dtype=torch.float64)

    def input_gradient(t):
        return torch.autograd.grad((fn(t) * v).sum(), t, create_graph=True)[0]

    with progan_fast.use_backend(backend):
        assert torch.autograd.gradgradcheck(input_gradient, (x,), fast_mode=backend == "triton")


def test_backward_op_gradcheck():
    """The backward raw op's own autograd (the composite double backward) against finite differences."""
    dy = torch.randn(4, 7, 2, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 6, 2, 3, dtype=torch.float64, requires_grad=True)
    for grouping, unbiased in CONVENTIONS.values():
        def dx(dy, x):
            return torch.ops.progan_fast.minibatch_stddev_backward(dy, x, 2, grouping, unbiased, 1e-8, 1)

        assert torch.autograd.gradcheck(dx, (dy, x))


def test_cpp_family_autograd_is_registered_in_cpp():
    """Python autograd costs ~0.1 ms a call at D's 4x4 shapes; both orders must run C++ autograd nodes."""
    x = torch.randn(4, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    y = torch.ops.progan_fast.minibatch_stddev_forward(x, 4, "strided", False, 1e-8, 1)
    assert "CppNode<" in y.grad_fn.name() and "MinibatchStddevForward" in y.grad_fn.name()
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
    assert "CppNode<" in dx.grad_fn.name() and "MinibatchStddevBackward" in dx.grad_fn.name()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_saves_only_the_input(backend):
    """Nothing computed by the forward is kept: the backward recomputes the per-position sigma from x."""
    x = torch.randn(8, 6, 3, 5, requires_grad=True)
    saved = []
    with progan_fast.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        minibatch_stddev(x, 4)
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()


class _AllOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_forward_is_one_op(memory_format):
    """The kernel writes the whole output: no torch.cat, no expand/repeat of the statistic."""
    x = layout(torch.randn(8, 6, 3, 5), memory_format)
    calls = _AllOps()
    with progan_fast.use_backend("cpu"), calls:
        y = minibatch_stddev(x, 4)
    assert calls.names == ["progan_fast::minibatch_stddev_forward"]
    assert y.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck(backend, memory_format, dtype):
    ops = _library.family_ops(backend)
    for shape, params in [((4, 8, 4, 4), (4, "strided", False, 1e-8, 1)),
                          ((3, 6, 3, 5), (2, "contiguous", True, 1e-8, 2)),
                          ((2, 2, 1, 1), (4, "strided", False, 1e-8, 2))]:
        for requires_grad in (False, True):
            x = layout(torch.randn(shape, dtype=dtype), memory_format).requires_grad_(requires_grad)
            torch.library.opcheck(ops.minibatch_stddev_forward.default, (x, *params))
            n, c, h, w = shape
            dy = layout(torch.randn(n, c + params[-1], h, w, dtype=dtype), memory_format)
            torch.library.opcheck(ops.minibatch_stddev_backward.default, (dy, x.detach(), *params))


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_compile_fullgraph(memory_format):
    torch._dynamo.reset()

    def fn(t):
        return minibatch_stddev(t * 2.0, 4, num_new_features=2).square().sum()

    x = layout(torch.randn(8, 8, 4, 4), memory_format).requires_grad_()
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


def test_module_defaults_are_tf_official():
    x = torch.randn(8, 4, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(MinibatchStddev()(x), minibatch_stddev(x, 4, "strided", False))
    check_output(MinibatchStddev()(x), x, strided_loop(x, 4))
    check_output(MinibatchStddev(num_new_features=2)(x), x, strided_loop(x, 4, features=2))


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_input_not_mutated_and_other_strides(memory_format):
    base = torch.randn(8, 10, 6, 6)
    x = base[:, ::2, 1:, :5]  # strided in every dimension: copied to contiguous, documented fallback
    before = x.clone()
    with progan_fast.use_backend("cpu"):
        y = minibatch_stddev(x, 4)
    assert torch.equal(x, before)
    assert y.is_contiguous()
    assert_close(y, reference.minibatch_stddev(x.double(), 4), torch.float32)


# ---- bad input ----

X = torch.randn(8, 4, 4, 4)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(x=torch.randn(6, 3, 4, 4)), ValueError, "group_size"),
    (dict(x=torch.randn(5, 3, 4, 4), group_size=2), ValueError, "group_size"),
    (dict(group_size=0), ValueError, "group_size"),
    (dict(group_size=2.0), TypeError, "group_size"),
    (dict(grouping="random"), ValueError, "grouping"),
    (dict(unbiased=1), TypeError, "unbiased"),
    (dict(x=torch.randn(1, 3, 4, 4), unbiased=True), ValueError, "unbiased"),
    (dict(group_size=1, unbiased=True), ValueError, "unbiased"),
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(eps=math.nan), ValueError, "eps"),
    (dict(num_new_features=0), ValueError, "num_new_features"),
    (dict(num_new_features=3), ValueError, "num_new_features=3 must divide the 4 channels"),
    (dict(num_new_features=1.0), TypeError, "num_new_features"),
    (dict(x=torch.randn(8, 3, 4)), ValueError, "x"),
    (dict(x=torch.randn(0, 3, 4, 4)), ValueError, "x"),
    (dict(x=torch.ones(8, 3, 4, 4, dtype=torch.int64)), TypeError, "x"),
], ids=lambda v: str(v)[:40] if not isinstance(v, type) else v.__name__)
def test_bad_arguments(kwargs, exc, name):
    args = dict(x=X)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        minibatch_stddev(**args)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_raw_ops_refuse_what_the_kernels_cannot_take(backend):
    """The raw ops are callable directly: arguments the kernels would misread are refused, naming the argument,
    by the kernel and by the fake alike (a meta argument routes a call to the fake)."""
    ops = _library.family_ops(backend)
    params = (4, "strided", False, 1e-8, 1)
    x = torch.randn(8, 4, 3, 3)
    with pytest.raises(RuntimeError, match="grad_y must have the output's shape"):
        ops.minibatch_stddev_backward(torch.randn(8, 4, 3, 3), x, *params)
    with pytest.raises(TypeError, match="grad_y must have x's dtype"):
        ops.minibatch_stddev_backward(torch.randn(8, 5, 3, 3, dtype=torch.float64), x, *params)
    with pytest.raises(RuntimeError, match="grad_y must be on cpu"):
        ops.minibatch_stddev_backward(torch.empty(8, 5, 3, 3, device="meta"), x, *params)
    with pytest.raises((RuntimeError, ValueError), match="group_size=3 does not divide"):
        ops.minibatch_stddev_forward(x, 3, "strided", False, 1e-8, 1)
    with pytest.raises((RuntimeError, ValueError), match="unbiased=True needs groups of at least 2"):
        ops.minibatch_stddev_forward(x, 1, "strided", True, 1e-8, 1)
    with pytest.raises((RuntimeError, ValueError), match="num_new_features=3 must divide"):
        ops.minibatch_stddev_forward(torch.empty(8, 4, 3, 3, device="meta"), 4, "strided", False, 1e-8, 3)
    with pytest.raises((RuntimeError, ValueError), match="grouping must be one of"):
        ops.minibatch_stddev_forward(x, 4, "random", False, 1e-8, 1)
    # found by tests/test_fuzz_raw_ops.py: an empty int x was accepted, a full one refused with torch's message
    for bad in (torch.ones(1, 6, 2, 0, dtype=torch.int32), torch.ones(3, 3, 2, 5, dtype=torch.int64)):
        with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
            ops.minibatch_stddev_forward(bad, 4, "strided", False, 1e-8, 1)
    with pytest.raises(ValueError, match="eps must be finite"):
        ops.minibatch_stddev_forward(x, 4, "strided", False, math.nan, 1)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_zero_statistic_backward_ignores_non_finite_x(backend):
    """Found by tests/test_fuzz_raw_ops.py: with contiguous groups of one the statistic is the constant 0 and
    dx = grad_y[:, :C] exactly; the emulated (CUDA) kernel added (x - 0) * 0, NaN where x is NaN or Inf."""
    ops = _library.family_ops(backend)
    x = torch.randn(1, 6, 3, 5)
    x[0, 5, 2, 1], x[0, 0, 0, 0] = math.inf, math.nan
    grad_y = torch.randn(1, 8, 3, 5)
    dx = ops.minibatch_stddev_backward(grad_y, x, 3, "contiguous", False, 1e-8, 2)
    assert torch.equal(dx, grad_y[:, :6])


# ---- properties ----

@st.composite
def random_inputs(draw):
    features = draw(st.sampled_from([1, 2, 3]))
    shape = [draw(st.integers(1, 9)), features * draw(st.integers(1, 4)), draw(st.integers(1, 5)),
             draw(st.integers(1, 5))]
    dtype = draw(st.sampled_from(DTYPES))
    grouping, unbiased = draw(st.sampled_from(list(CONVENTIONS.values())))
    group_size = draw(st.integers(1, 10))
    if grouping == "strided" and not defined(shape[0], group_size, grouping):
        group_size = shape[0]
    if unbiased and min(group_size, shape[0]) == 1 and grouping == "strided":
        unbiased = False
    seed = draw(SEEDS)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([s * 2 for s in shape], dtype=torch.float64, generator=gen).to(dtype)
    # random strides: a step-2 slice in some dimensions, a permutation, or channels_last
    x = x[tuple(slice(None, None, 2) if draw(st.booleans()) else slice(0, s) for s in shape)]
    if draw(st.booleans()):
        perm = draw(st.permutations(range(4)))
        x = x.permute(*perm).contiguous().permute(*[perm.index(i) for i in range(4)])
    elif draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, (group_size, grouping, unbiased, 1e-8, features), seed


@settings(max_examples=60, deadline=None)
@given(random_inputs())
def test_property_random_shapes_strides_dtypes(case):
    x, params, _ = case
    with progan_fast.use_backend("cpu"):
        y = minibatch_stddev(x, *params)
    assert_close(y, reference.minibatch_stddev(x.double(), *params), x.dtype)


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
def test_double_backward_formula_refuses_a_misshaped_gradient(namespace):
    """The double-backward raw op is a composite of torch ops: without the check a wrongly shaped g would broadcast
    into a wrong result instead of an error."""
    x = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    grad_y = torch.randn(8, 5, 3, 3, dtype=torch.float64)
    ops = getattr(torch.ops, namespace)
    with pytest.raises(RuntimeError, match="g must have x's shape"):
        ops.minibatch_stddev_double_backward(x[:, :1], grad_y, x, 4, "strided", False, 1e-8, 1)
    with pytest.raises(TypeError, match="g must have x's dtype torch.float64"):
        ops.minibatch_stddev_double_backward(x.float(), grad_y, x, 1, "contiguous", False, 1e-8, 1)


def _double_backward_reference(g, grad_y, x, *params):
    """The double backward by autograd of the float64 reference."""
    grad_y, x = (t.double().requires_grad_() for t in (grad_y, x))
    (dx,) = torch.autograd.grad(reference.minibatch_stddev(x, *params), x, grad_y, create_graph=True)
    return torch.autograd.grad(dx, (grad_y, x), g.double())


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
@pytest.mark.parametrize("shape", [(4, 3, 0, 2), (4, 0, 2, 2), (4, 3, 2, 0)], ids=str)
def test_double_backward_formula_on_empty_maps(namespace, shape):
    """Found by tests/test_fuzz_raw_ops.py: reshape(-1, ...) of an empty tensor is ambiguous, so the formula
    refused empty maps (an error naming no argument) that the kernels take."""
    ops = getattr(torch.ops, namespace)
    x = torch.randn(shape, dtype=torch.float64)
    g = torch.randn(shape, dtype=torch.float64)
    grad_y = torch.randn(shape[0], shape[1] + 1, *shape[2:], dtype=torch.float64)
    got = ops.minibatch_stddev_double_backward(g, grad_y, x, 2, "strided", False, 1e-8, 1)
    for o, e in zip(got, _double_backward_reference(g, grad_y, x, 2, "strided", False, 1e-8, 1)):
        torch.testing.assert_close(o, e)


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
@pytest.mark.parametrize("case", ["groups_of_two", "equal_samples"])
def test_double_backward_formula_is_accurate_in_float32(namespace, case):
    """Found by tests/test_fuzz_raw_ops.py. Groups of two: grad_x is a multiple of eps / sigma^2, which float32
    math left as its rounding. A group of equal samples: the rounded float32 mean made u ~ 1e-7 instead of 0,
    amplified by 1 / sigma = 1 / sqrt(eps) into the statistic's gradient."""
    ops = getattr(torch.ops, namespace)
    gen = torch.Generator().manual_seed(0)
    if case == "groups_of_two":
        params = (2, "strided", False, 1e-8, 1)
        x = torch.randn(4, 4, 3, 3, generator=gen)
        x[2:] = x[:2] + 0.01 * torch.randn(2, 4, 3, 3, generator=gen)  # close pairs: a small sigma
    else:
        params = (8, "contiguous", False, 1e-8, 1)
        x = (torch.randn(1, 4, 3, 3, generator=gen) * 1.7).expand(8, 4, 3, 3).contiguous()
    g = torch.randn(x.shape, generator=gen)
    grad_y = torch.randn(x.shape[0], 5, 3, 3, generator=gen)
    got = ops.minibatch_stddev_double_backward(g, grad_y, x, *params)
    for o, e in zip(got, _double_backward_reference(g, grad_y, x, *params)):
        assert_close(o, e, torch.float32, grad=True)
