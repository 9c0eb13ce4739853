"""The fused up/down convs that rebuild their kernel in backward (progan_fast.ops._resample_conv) against the
plain conv on the built kernel they replace: the same values to every order (bit for bit where the same ops run in
the same order), only x and the k x k weight saved for backward, and only the gradients the engine uses computed."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from progan_fast import reference
from progan_fast.ops import _resample_conv, _resample_kernel, eq_conv2d

LAYOUTS = [torch.contiguous_format, torch.channels_last]
LAYOUT_IDS = ["nchw", "channels_last"]


def plain(x, weight, transposed):
    """The previous fused conv: F.conv2d / F.conv_transpose2d on the built kernel, which autograd saves."""
    pad = (weight.shape[-1] - 1) // 2
    if transposed:
        return F.conv_transpose2d(x, _resample_kernel.transposed_resample_kernel(weight), stride=2, padding=pad)
    return F.conv2d(x, _resample_kernel.resample_kernel(weight) * 0.25, stride=2, padding=pad)


def inputs(shape, weight_shape, x_format, w_format, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype).contiguous(memory_format=x_format)
    w = torch.randn(weight_shape, generator=gen, dtype=dtype).contiguous(memory_format=w_format)
    return x, w


@pytest.mark.parametrize("requires", [(True, True), (True, False), (False, True)], ids=["x,w", "x", "w"])
@pytest.mark.parametrize("w_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("x_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_gradcheck_gradgradcheck(transposed, k, x_format, w_format, requires):
    x, w = inputs((2, 3, 5, 4), (2, 3, k, k), x_format, w_format, torch.float64)
    x.requires_grad_(requires[0])
    w.requires_grad_(requires[1])

    def fn(x, w):
        return _resample_conv.conv2d_resample(x, w, transposed)

    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_equals_reference_float64(transposed):
    x, w = inputs((2, 4, 7, 6), (3, 4, 3, 3), torch.contiguous_format, torch.contiguous_format, torch.float64)
    got = _resample_conv.conv2d_resample(x, w, transposed)
    want = reference.conv2d_resample(x, w, up=transposed, down=not transposed)
    assert torch.equal(got, want)


@pytest.mark.parametrize("w_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("x_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_output_and_gradients_equal_plain_conv_bitwise(transposed, x_format, w_format):
    # Forward: the same kernel and the same conv call. First derivatives: the same convolution_backward call and the
    # same adjoint. Output, gradients and their memory formats are the plain conv's exactly, whichever inputs ask.
    x0, w0 = inputs((3, 8, 9, 7), (6, 8, 3, 3), x_format, w_format)
    gen = torch.Generator().manual_seed(1)
    for wrt in ((0, 1), (0,), (1,)):
        results = []
        for fn in (plain, _resample_conv.conv2d_resample):
            x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
            y = fn(x, w, transposed)
            grad_y = torch.empty_like(y).copy_(torch.randn(y.shape, generator=gen.manual_seed(1)))
            results.append((y,) + torch.autograd.grad(y, [(x, w)[i] for i in wrt], grad_y))
        for want, got in zip(*results):
            assert torch.equal(got, want)
            assert got.stride() == want.stride()


@pytest.mark.parametrize("w_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("x_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_gradient_penalty_double_backward_equals_plain_conv(transposed, x_format, w_format):
    # The WGAN-GP pattern: the input gradient with create_graph, a penalty on it, backward to x and the weight.
    # The input gradient and x's second-order gradient are bit-identical; the weight's is the sum of the same two
    # terms, each mapped through the kernel's adjoint before they are added instead of after (a rounding apart).
    x0, w0 = inputs((4, 16, 9, 8), (8, 16, 3, 3), x_format, w_format)
    results = []
    for fn in (plain, _resample_conv.conv2d_resample):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = fn(x, w, transposed)
        grad_x, = torch.autograd.grad((y * torch.sin(y)).sum(), x, create_graph=True)
        loss = (grad_x.square().flatten(1).sum(1).sqrt() - 1).square().sum() + y.sum()
        loss.backward()
        results.append((y, grad_x, x.grad, w.grad))
    (y0, g0, gx0, gw0), (y1, g1, gx1, gw1) = results
    assert torch.equal(y1, y0) and torch.equal(g1, g0) and torch.equal(gx1, gx0)
    assert gw1.stride() == gw0.stride()
    torch.testing.assert_close(gw1, gw0, rtol=1e-6, atol=1e-6 * gw0.abs().max().item())


@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_third_order_equals_plain_conv_float64(transposed):
    x0, w0 = inputs((2, 3, 5, 4), (2, 3, 3, 3), torch.contiguous_format, torch.contiguous_format, torch.float64)
    results = []
    for fn in (plain, _resample_conv.conv2d_resample):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = fn(x, w, transposed)
        gx, gw = torch.autograd.grad(y.square().sum(), (x, w), create_graph=True)
        ggx, ggw = torch.autograd.grad((gx.sin().sum() + gw.square().sum()), (x, w), create_graph=True)
        results.append(torch.autograd.grad((ggx * ggw.sum()).sum() + ggw.cos().sum(), (x, w)))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _saved(fn):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn()
    return saved


@pytest.mark.parametrize("w_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("x_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_saves_x_and_weight_not_the_kernel(transposed, x_format, w_format):
    x, w = inputs((2, 4, 6, 6), (5, 4, 3, 3), x_format, w_format)
    x.requires_grad_()
    w.requires_grad_()
    saved = _saved(lambda: _resample_conv.conv2d_resample(x, w, transposed))
    assert len(saved) == 2 and saved[0] is x and saved[1] is w
    # the plain conv saves the 4x4 kernel in place of the weight
    saved = _saved(lambda: plain(x, w, transposed))
    assert any(t.shape[-2:] == (4, 4) for t in saved)
    # and so does eq_conv2d's fused conv, the layer the models use: nothing (k+1) x (k+1), nothing new of w's size
    saved = _saved(lambda: eq_conv2d(x, w, torch.zeros(5), up=transposed, down=not transposed))
    assert not any(t.shape[-2:] == (4, 4) for t in saved)
    assert sum(t is w for t in saved) == 1 and sum(t.shape == w.shape for t in saved) == 1


class _ConvolutionBackwardMasks(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.append(tuple(args[-1]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_computes_only_the_gradients_the_engine_uses(transposed):
    # The plain conv's node gets its output mask from the engine; the Function asks the engine the same question.
    def masks(fn, wrt, leaf_weight=True):
        x, w = inputs((2, 4, 6, 6), (5, 4, 3, 3), torch.contiguous_format, torch.contiguous_format)
        x.requires_grad_()
        w.requires_grad_()
        weight = w if leaf_weight else w * 1  # a non-leaf weight, as under autocast (the cast)
        y = fn(x, weight, transposed).sum()
        with _ConvolutionBackwardMasks() as mode:
            if wrt is None:
                y.backward()
            else:
                torch.autograd.grad(y, [(x, w, weight)[i] for i in wrt])
        return mode.masks

    for wrt in (None, (0,), (1,), (2,), (0, 1), (0, 2)):
        for leaf_weight in (True, False):
            want = masks(plain, wrt, leaf_weight)
            assert masks(_resample_conv.conv2d_resample, wrt, leaf_weight) == want, (wrt, leaf_weight)
    assert masks(_resample_conv.conv2d_resample, (0,)) == [(True, False, False)]
    assert masks(_resample_conv.conv2d_resample, (1,)) == [(False, True, False)]


@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_bf16_autocast_equals_plain_conv_bitwise(transposed):
    x0, w0 = inputs((2, 8, 6, 6), (4, 8, 3, 3), torch.channels_last, torch.contiguous_format)
    results = []
    for conv in (plain, _resample_conv.conv2d_resample):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x.bfloat16(), w.bfloat16(), transposed)
            grad_x, = torch.autograd.grad(y.float().square().sum(), x, create_graph=True)
            (y.float().sum() + grad_x.square().sum()).backward()
        assert y.dtype == torch.bfloat16 and w.grad.dtype == torch.float32
        results.append((y, grad_x, x.grad))
    for want, got in zip(*results):
        assert torch.equal(got, want)


def test_meta():
    x = torch.empty(2, 4, 6, 6, device="meta", requires_grad=True)
    w = torch.empty(5, 4, 3, 3, device="meta", requires_grad=True)
    y = _resample_conv.conv2d_resample(x, w, False)
    assert y.shape == (2, 5, 3, 3)
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


@pytest.mark.parametrize("transposed", [False, True], ids=["down", "up"])
def test_compile_matches_eager(transposed):
    # traced whole (fullgraph) by dynamo, forward and backward, as G's up convs are under torch.compile
    x0, w0 = inputs((2, 4, 6, 6), (5, 4, 3, 3), torch.channels_last, torch.contiguous_format)

    def fn(x, w):
        return _resample_conv.conv2d_resample(x, w, transposed)

    results = []
    for f in (fn, torch.compile(fn, backend="aot_eager", fullgraph=True)):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        y = f(x, w)
        y.square().sum().backward()
        results.append((y, x.grad, w.grad))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want)
        assert got.stride() == want.stride()
