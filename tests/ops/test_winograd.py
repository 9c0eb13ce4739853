"""conv3x3_winograd (progan_fast/ops/winograd.py, csrc/cpu/winograd.cpp): Winograd F(4x4, 3x3) against torch's
convolution, its transforms' adjointness, its derivatives to the third order, its accuracy in float32, its raw
ops' refusals, and its use by eq_conv2d when chosen."""
import pytest
import torch
import torch.nn.functional as F

import progan_fast
from progan_fast import ops, reference
from progan_fast.ops import winograd

pytestmark = pytest.mark.skipif(not progan_fast.backends.available("cpu"), reason="the C++ extension is not built")

raw = winograd._ops
# (N, Cin, Cout, H, W): one tile, partial tiles, channel counts that leave a partial 16-channel chunk, several tiles
SHAPES = [(1, 1, 1, 4, 4), (2, 3, 5, 7, 9), (1, 20, 24, 13, 6), (2, 16, 16, 8, 8), (1, 17, 3, 1, 1), (3, 2, 4, 5, 12)]


def channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


def inputs(n, cin, cout, h, w, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g, dtype=dtype)
    weight = torch.randn(cout, cin, 3, 3, generator=g, dtype=dtype)
    return x, weight


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_forward_is_the_convolution_in_float64(shape, layout):
    x, w = inputs(*shape)
    if layout == "channels_last":
        x = channels_last(x)
    y = winograd.conv3x3_winograd(x, w)
    expected = F.conv2d(x, w, padding=1)
    layout = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert y.shape == expected.shape and y.is_contiguous(memory_format=layout)  # x's layout, as torch's conv
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_transforms_are_adjoint_pairs(shape):
    n, c, _, h, w = shape
    g = torch.Generator().manual_seed(1)
    x = channels_last(torch.randn(n, c, h, w, generator=g, dtype=torch.float64))
    v = raw.input_transform(x)
    assert v.shape == (n, 36 * c, (h + 3) // 4, (w + 3) // 4)
    grad_v = channels_last(torch.randn(v.shape, generator=g, dtype=torch.float64))
    lhs, rhs = (v * grad_v).sum(), (x * raw.input_transform_adjoint(grad_v, h, w)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-10)
    m = channels_last(torch.randn(v.shape, generator=g, dtype=torch.float64))
    y = raw.output_transform(m, h, w)
    assert y.shape == x.shape
    grad_y = channels_last(torch.randn(y.shape, generator=g, dtype=torch.float64))
    lhs, rhs = (y * grad_y).sum(), (m * raw.output_transform_adjoint(grad_y)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 2, 5, 6), (1, 2, 3, 9, 4)], ids=str)
def test_gradcheck_and_gradgradcheck(shape):
    x, w = inputs(*shape)
    x.requires_grad_()
    w.requires_grad_()
    assert torch.autograd.gradcheck(winograd.conv3x3_winograd, (x, w))
    assert torch.autograd.gradgradcheck(winograd.conv3x3_winograd, (x, w))


def test_third_derivative_matches_torch_conv():
    """The gradient penalty's backward differentiates the conv twice; one more order exercises every pair of the
    three Functions' backwards."""
    def third(conv, x, w):
        y = conv(x, w)
        (gx,) = torch.autograd.grad(y.sin().sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w, create_graph=True)
        return torch.autograd.grad(gw.pow(3).sum(), (x, w))

    x, w = inputs(2, 3, 4, 6, 7)
    ours = third(winograd.conv3x3_winograd, x.requires_grad_(), w.requires_grad_())
    theirs = third(lambda a, b: F.conv2d(a, b, padding=1), x, w)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())


@pytest.mark.parametrize("cin", [128, 512])
def test_float32_error_bound(cin):
    """F(4x4, 3x3) rounds about ten times as much as a direct conv in float32 (transform constants up to 8 and
    1/24): measured 2-3e-6 RMS and up to 1e-5 relative to the output's largest value, against 2-3e-7 direct. The
    bound here is what the module's docstring promises; a transform with a wrong constant is off by O(1)."""
    x, w = inputs(4, cin, 64, 16, 16, dtype=torch.float32, seed=2)
    w = w / (cin * 9) ** 0.5
    expected = F.conv2d(x.double(), w.double(), padding=1)
    scale = expected.abs().max()
    error = (winograd.conv3x3_winograd(x, w).double() - expected) / scale
    direct = (F.conv2d(x, w, padding=1).double() - expected) / scale
    assert error.abs().max() < 3e-5
    assert error.square().mean().sqrt() < 6e-6
    assert direct.abs().max() < error.abs().max()  # the bound measures Winograd, not a broken reference


@pytest.mark.parametrize("products", ["onednn", "bmm"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradients_in_float32_are_within_the_bound(monkeypatch, products, layout):
    """Both float32 paths of the per-point products (oneDNN's grouped conv; the batched matrix product from
    BMM_CHANNELS up), through the gradient and the gradient penalty's second derivative."""
    monkeypatch.setattr(winograd, "BMM_CHANNELS", 1 if products == "bmm" else 1 << 30)
    x, w = inputs(2, 64, 32, 16, 16, dtype=torch.float32, seed=3)
    x = channels_last(x) if layout == "channels_last" else x
    x, w = x.requires_grad_(), (w / 24).requires_grad_()
    g = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(4))
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    results = []
    for conv, xs, ws, gs in ((winograd.conv3x3_winograd, x, w, g), (F.conv2d, xd, wd, g.double())):
        y = conv(xs, ws) if conv is winograd.conv3x3_winograd else conv(xs, ws, padding=1)
        gx, gw = torch.autograd.grad((y * gs).square().sum(), (xs, ws), create_graph=True)
        penalty = gx.reshape(2, -1).norm(dim=1).square().sum()
        results.append((y, gx, gw) + torch.autograd.grad(penalty, (xs, ws)))
    for ours, expected in zip(*results):
        assert ((ours.double() - expected).abs().max() / expected.abs().max()) < 3e-5


@pytest.mark.parametrize("call, name", [
    (lambda: raw.input_transform(torch.ones(1, 2, 4, 4)), "channels_last"),
    (lambda: raw.input_transform(torch.ones(2, 4, 4)), "x"),
    (lambda: raw.input_transform(channels_last(torch.ones(1, 2, 4, 4, dtype=torch.int32))), "x"),
    (lambda: raw.input_transform(channels_last(torch.ones(1, 2, 4, 4, dtype=torch.float16))), "x"),
    (lambda: raw.input_transform(torch.ones(1, 2, 1, 1).expand(1, 2, 4, 4)), "x"),
    (lambda: raw.input_transform_adjoint(channels_last(torch.ones(1, 35, 1, 1)), 4, 4), "grad_v"),
    (lambda: raw.input_transform_adjoint(channels_last(torch.ones(1, 36, 1, 1)), 5, 4), "grad_v"),
    (lambda: raw.input_transform_adjoint(channels_last(torch.ones(1, 36, 1, 1)), 0, 4), "height"),
    (lambda: raw.output_transform(channels_last(torch.ones(1, 36, 2, 1)), 4, 4), "m"),
    (lambda: raw.output_transform(channels_last(torch.ones(1, 36, 1, 1)), 4, -1), "width"),
    (lambda: raw.output_transform_adjoint(torch.ones(1, 2, 3, 4)), "grad_y"),
    (lambda: winograd.conv3x3_winograd(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 5, 5)), "weight"),
    (lambda: winograd.conv3x3_winograd(torch.ones(1, 2, 4, 4), torch.ones(3, 4, 3, 3)), "weight"),
    (lambda: winograd.conv3x3_winograd(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 3, 3, dtype=torch.float64)), "float"),
    (lambda: winograd.conv3x3_winograd(torch.ones(1, 2, 4, 4, device="meta"), torch.ones(3, 2, 3, 3)), "CPU"),
    (lambda: winograd.set_conv_algorithm("fft"), "conv algorithm"),
    (lambda: winograd.conv3x3_winograd(torch.ones(1, 0, 4, 4), torch.ones(3, 0, 3, 3)), "x"),
    (lambda: winograd.conv3x3_winograd(torch.ones(1, 2, 0, 4), torch.ones(3, 2, 3, 3)), "x"),
], ids=range(18))
def test_bad_arguments_are_refused_by_name(call, name):
    with pytest.raises((RuntimeError, ValueError, TypeError), match=name):
        call()


def test_meta_and_empty_batches():
    v = raw.input_transform(channels_last(torch.empty(2, 3, 5, 9, device="meta")))
    assert v.device.type == "meta" and v.shape == (2, 108, 2, 3) and v.is_contiguous(memory_format=torch.channels_last)
    x, w = inputs(0, 3, 4, 5, 5)
    assert winograd.conv3x3_winograd(x, w).shape == (0, 4, 5, 5)
    dx = raw.input_transform_adjoint(channels_last(torch.empty(0, 36, 2, 2)), 5, 5)
    assert dx.shape == (0, 1, 5, 5)


def test_eq_conv2d_uses_it_only_when_chosen(monkeypatch):
    calls = []
    real = winograd.conv3x3_winograd
    monkeypatch.setattr(winograd, "conv3x3_winograd", lambda x, w: calls.append(x.shape) or real(x, w))
    x, w = inputs(2, 8, 8, 16, 16, dtype=torch.float32, seed=5)
    x = channels_last(x)
    with progan_fast.use_backend("cpu"):
        direct = ops.eq_conv2d(x, w)
        with winograd.use_conv_algorithm("winograd"):
            fast = ops.eq_conv2d(x, w)
            nchw = ops.eq_conv2d(x.contiguous(), w)          # converted for the transforms, returned NCHW
            small = ops.eq_conv2d(x[:, :, :4, :4], w)       # a 4x4 map is one mostly padded tile
            small_nchw = ops.eq_conv2d(x[:, :, :8, :8].contiguous(), w)  # 8x8 pays only in channels_last
            resampled = ops.eq_conv2d(x, w, down=True)       # the fused down conv is not a 3x3 conv
        assert winograd.conv_algorithm() == "direct"
        with progan_fast.use_conv_algorithm("winograd"):  # the package-level names are the same switch
            assert winograd.conv_algorithm() == "winograd" and progan_fast.conv_algorithm() == "winograd"
    assert calls == [x.shape, x.shape]
    expected = reference.eq_conv2d(x.double(), w.double())
    torch.testing.assert_close(fast.double(), expected, rtol=0, atol=3e-5 * expected.abs().max().item())
    assert torch.equal(nchw, fast) and nchw.is_contiguous()
    assert small.shape == (2, 8, 4, 4) and small_nchw.shape == (2, 8, 8, 8) and resampled.shape == (2, 8, 8, 8)
    assert not torch.equal(fast, direct)  # it did run a different algorithm


def test_an_nchw_model_keeps_nchw_gradients():
    """Trainers .view() the gradient of D's input for the penalty (pro-gan-pth does): through an NCHW model every
    gradient comes back NCHW, to every order."""
    x, w = inputs(2, 4, 4, 8, 8, seed=6)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = winograd.conv3x3_winograd(x, w)
    (grad_x,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    assert y.is_contiguous() and grad_x.is_contiguous()
    grad_x.view(2, -1).norm(dim=1).sum().backward()
    assert x.grad.is_contiguous() and w.grad.shape == w.shape
    expected_x, expected_w = torch.autograd.grad(
        torch.autograd.grad(F.conv2d(x, w, padding=1).square().sum(), x, create_graph=True)[0]
        .view(2, -1).norm(dim=1).sum(), (x, w))
    torch.testing.assert_close(x.grad, expected_x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w.grad, expected_w, rtol=1e-10, atol=1e-10)


def test_empty_batch_gradients():
    x, w = inputs(0, 3, 4, 5, 5)
    x.requires_grad_()
    w.requires_grad_()
    gx, gw = torch.autograd.grad(winograd.conv3x3_winograd(x, w).sum(), (x, w))
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w))


def test_input_gradient_alone_skips_the_weight_gradient(monkeypatch):
    """The gradient penalty's first backward asks only for the images' gradient: no weight gradient is computed
    (it costs as much as the conv); a full backward still gets both, and the same values as when both are asked."""
    calls = []
    real = winograd._adjoint_w
    monkeypatch.setattr(winograd, "_adjoint_w", lambda *args: calls.append(1) or real(*args))
    x, w = inputs(2, 3, 4, 8, 8)
    x.requires_grad_()
    w.requires_grad_()
    (gx,) = torch.autograd.grad(winograd.conv3x3_winograd(x * 2, w).square().sum(), x)  # input not the leaf
    assert calls == []
    winograd.conv3x3_winograd(x * 2, w).square().sum().backward()
    assert calls == [1]
    torch.testing.assert_close(x.grad, gx, rtol=0, atol=0)
    expected = torch.autograd.grad(F.conv2d(x * 2, w, padding=1).square().sum(), (x, w))
    torch.testing.assert_close((x.grad, w.grad), expected, rtol=1e-10, atol=1e-10)


def test_a_full_backward_transforms_the_gradient_once(monkeypatch):
    calls = []
    real = winograd._transformed_grad
    monkeypatch.setattr(winograd, "_transformed_grad", lambda g: calls.append(1) or real(g))
    x, w = inputs(2, 3, 4, 8, 8)
    x.requires_grad_()
    w.requires_grad_()
    gx, gw = torch.autograd.grad(winograd.conv3x3_winograd(x, w).square().sum(), (x, w))
    assert calls == [1]
    expected = torch.autograd.grad(F.conv2d(x, w, padding=1).square().sum(), (x, w))
    torch.testing.assert_close((gx, gw), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["input_transform", "input_transform_adjoint", "output_transform",
                                  "output_transform_adjoint"])
def test_raw_ops_pass_opcheck(name):
    """Schema, fake (meta) functions and autograd registration agree with the CPU kernels."""
    x = channels_last(torch.randn(2, 3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6)))
    tiles = channels_last(torch.randn(raw.input_transform(x).shape, dtype=torch.float64))
    args = {"input_transform": (x,), "input_transform_adjoint": (tiles, 5, 7), "output_transform": (tiles, 5, 7),
            "output_transform_adjoint": (x,)}[name]
    torch.library.opcheck(getattr(raw, name), args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
