import math

import pytest
import torch
import torch.nn.functional as F

from progan_fast.models import Discriminator, Generator, num_features
from progan_fast.nn import EqualizedConv2d, EqualizedLinear, PixelNorm
from progan_fast.ops import eq_conv2d, eq_linear, pixel_norm

from ops.parity import kernel_ran

SMALL = dict(resolution=32, fmap_base=64, fmap_max=16)  # nf: 16, 16, 16, 8, 4 at 4 .. 32


def count(module, exclude=None):
    return sum(p.numel() for name, p in module.named_parameters() if exclude is None or not name.startswith(exclude))


def test_parameter_counts_1024_match_tf_official():
    # anchors 1.2: G = 23,079,115 with the 9 toRGB layers (23,071,456 without), D = 23,087,249 (all 9 fromRGB)
    with torch.device("meta"):
        G, D = Generator(), Discriminator()
    assert count(G) == 23_079_115
    assert count(G, exclude="to_rgb") == 23_071_456
    assert count(D) == 23_087_249
    assert G.resolution_log2 == D.resolution_log2 == 10
    assert G.latent_size == 512
    assert [num_features(r - 1) for r in range(2, 11)] == [512, 512, 512, 512, 256, 128, 64, 32, 16]


def test_layer_gains_and_shapes_follow_tf_official():
    with torch.device("meta"):
        G, D = Generator(), Discriminator()
    assert G.blocks["2"].dense.weight.shape == (16 * 512, 512) and G.blocks["2"].dense.bias.shape == (512,)
    assert G.blocks["2"].dense.gain == pytest.approx(math.sqrt(2) / 4)
    assert all(m.gain == 1.0 and m.activation == "linear" for m in G.to_rgb.values())
    assert G.blocks["6"].conv0_up.weight.shape == (256, 512, 3, 3) and G.blocks["6"].conv0_up.up
    assert D.blocks["6"].conv1_down.weight.shape == (512, 256, 3, 3) and D.blocks["6"].conv1_down.down
    assert D.blocks["2"].conv.weight.shape == (512, 513, 3, 3)
    assert D.blocks["2"].dense1.gain == 1.0 and D.blocks["2"].dense1.activation == "linear"
    assert all(m.gain == pytest.approx(math.sqrt(2)) and m.activation == "lrelu" for m in D.from_rgb.values())


def test_state_dict_keys_are_stable():
    G, D = Generator(**SMALL), Discriminator(**SMALL)
    g_keys, d_keys = set(G.state_dict()), set(D.state_dict())
    assert {"blocks.2.dense.weight", "blocks.2.dense.bias", "blocks.2.conv.weight", "blocks.3.conv0_up.weight",
            "blocks.5.conv1.bias", "to_rgb.2.weight", "to_rgb.5.bias"} <= g_keys
    assert {"from_rgb.2.weight", "from_rgb.5.bias", "blocks.3.conv0.weight", "blocks.5.conv1_down.weight",
            "blocks.2.conv.weight", "blocks.2.dense0.weight", "blocks.2.dense1.bias"} <= d_keys


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_output_shapes_at_every_resolution(alpha):
    G, D = Generator(num_channels=2, **SMALL), Discriminator(num_channels=2, **SMALL)
    z = torch.randn(4, G.latent_size)
    for r in range(2, 6):
        img = G(z, r, alpha)
        assert img.shape == (4, 2, 2 ** r, 2 ** r)
        assert D(img, r, alpha).shape == (4, 1)
    assert G(z).shape == (4, 2, 32, 32)


def test_generator_fade_continuity():
    G = Generator(**SMALL)
    z = torch.randn(3, G.latent_size)
    for r in range(3, 6):
        low = G(z, r - 1, 1.0)
        assert torch.equal(G(z, r, 0.0), F.interpolate(low, scale_factor=2, mode="nearest"))
        new = G(z, r, 1.0)
        mid = G(z, r, 0.3)
        torch.testing.assert_close(mid, F.interpolate(low, scale_factor=2, mode="nearest") * 0.7 + new * 0.3)
        assert torch.equal(G(z, r, torch.tensor(0.3)), mid)


def test_discriminator_fade_continuity():
    D = Discriminator(**SMALL)
    for r in range(3, 6):
        img = torch.randn(4, 3, 2 ** r, 2 ** r)
        assert torch.equal(D(img, r, 0.0), D(F.avg_pool2d(img, 2), r - 1, 1.0))
        assert not torch.allclose(D(img, r, 1.0), D(img, r, 0.0))


def test_fades_run_the_fused_ops():
    G, D = Generator(**SMALL), Discriminator(**SMALL)
    img = torch.randn(4, 3, 16, 16)
    with kernel_ran("cpu", "upsample_blend"):
        G(torch.randn(4, G.latent_size), 4, 0.3)
    with kernel_ran("cpu", "fade_from_rgb"):
        D(img, 4, 0.3)
    # a tensor alpha takes the fused op even at the ends: the same scores as either path alone, up to rounding
    torch.testing.assert_close(D(img, 4, torch.tensor(0.0)), D(F.avg_pool2d(img, 2), 3, 1.0))
    torch.testing.assert_close(D(img, 4, torch.tensor(1.0)), D(img, 4, 1.0))


def test_discriminator_blends_in_feature_space_after_the_block():
    D = Discriminator(**SMALL)
    img = torch.randn(4, 3, 16, 16)
    old = D.from_rgb["3"](F.avg_pool2d(img, 2))
    new = D.blocks["4"](D.from_rgb["4"](img))
    x = D.blocks["3"](old + (new - old) * 0.25)
    torch.testing.assert_close(D(img, 4, 0.25), D.blocks["2"](x))


def test_generator_matches_explicit_tf_pipeline():
    G = Generator(resolution=8, fmap_base=32, fmap_max=8, latent_size=6).double()
    z = torch.randn(4, 6, dtype=torch.float64)
    b2, b3 = G.blocks["2"], G.blocks["3"]
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    x = F.linear(x, b2.dense.weight * (math.sqrt(2) / 4 / math.sqrt(6))).view(4, 8, 4, 4)
    x = pixel_norm(F.leaky_relu(x + b2.dense.bias.view(1, -1, 1, 1), 0.2))
    x = eq_conv2d(x, b2.conv.weight, b2.conv.bias, pixel_norm=True)
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    x = pixel_norm(F.leaky_relu(F.conv2d(x, b3.conv0_up.weight * (math.sqrt(2) / math.sqrt(72)), padding=1)
                                + b3.conv0_up.bias.view(1, -1, 1, 1), 0.2))
    x = eq_conv2d(x, b3.conv1.weight, b3.conv1.bias, pixel_norm=True)
    rgb = F.conv2d(x, G.to_rgb["3"].weight / math.sqrt(8)) + G.to_rgb["3"].bias.view(1, -1, 1, 1)
    torch.testing.assert_close(G(z, 3, 1.0), rgb, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("r,alpha", [(2, 1.0), (4, 1.0), (4, 0.5)])
def test_gradient_penalty_double_backward(r, alpha):
    G, D = Generator(**SMALL), Discriminator(**SMALL)
    reals = torch.randn(4, 3, 2 ** r, 2 ** r)
    fakes = G(torch.randn(4, G.latent_size), r, alpha)
    u = torch.rand(4, 1, 1, 1)
    mixed = (reals + (fakes.detach() - reals) * u).requires_grad_()
    (grad,) = torch.autograd.grad(D(mixed, r, alpha).sum(), mixed, create_graph=True)
    penalty = 10 * (grad.flatten(1).norm(dim=1) - 1).square().mean()
    penalty.backward()
    for name, p in D.named_parameters():
        used = name.startswith(("blocks.2.", f"from_rgb.{r}.")) or \
            any(name.startswith(f"blocks.{k}.") for k in range(3, r + 1)) or \
            (alpha < 1 and name.startswith(f"from_rgb.{r - 1}."))
        if name == "blocks.2.dense1.bias":  # the final bias shifts D but not its input gradient
            used = False
        if used and name.endswith(".bias"):
            # Past the minibatch-stddev layer D's input gradient does not depend on the biases (leaky ReLU is
            # piecewise linear): the reference backpropagates zeros there, the fused epilogue no gradient at all
            # (it skips that pass). Before it, the stddev's nonlinearity gives them a gradient.
            assert p.grad is None or torch.isfinite(p.grad).all(), name
            assert p.grad is not None or name.startswith("blocks.2."), name
        elif used:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name


def test_discriminator_gradgradcheck_float64():
    D = Discriminator(resolution=8, fmap_base=8, fmap_max=4, num_channels=1).double()
    img = torch.randn(4, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: D(x, 3, 0.5), (img,), fast_mode=True)


def test_channels_last_matches_contiguous():
    # float64 so that the comparison sees layout bugs, not the different rounding of the two conv algorithms
    G, D = Generator(**SMALL).double(), Discriminator(**SMALL).double()
    G_cl, D_cl = Generator(channels_last=True, **SMALL).double(), Discriminator(channels_last=True, **SMALL).double()
    G_cl.load_state_dict(G.state_dict())
    D_cl.load_state_dict(D.state_dict())
    z = torch.randn(4, G.latent_size, dtype=torch.float64)
    for r, alpha in [(2, 1.0), (4, 0.5), (5, 1.0)]:
        img, img_cl = G(z, r, alpha), G_cl(z, r, alpha)
        if r > 2:  # a 4x4 RGB image is contiguous in both layouts
            assert img_cl.is_contiguous(memory_format=torch.channels_last) and not img_cl.is_contiguous()
        torch.testing.assert_close(img_cl, img, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(D_cl(img, r, alpha), D(img, r, alpha), rtol=1e-10, atol=1e-10)
        # channels_last input without the flag
        torch.testing.assert_close(D(img.contiguous(memory_format=torch.channels_last), r, alpha), D(img, r, alpha),
                                   rtol=1e-10, atol=1e-10)


def test_modules_initialise_and_call_the_ops():
    conv = EqualizedConv2d(3, 5, 3, lr_mul=0.5, pixel_norm=True, down=True)
    assert conv.bias is not None and torch.equal(conv.bias, torch.zeros(5))
    big = EqualizedLinear(400, 500, lr_mul=0.25)
    assert big.weight.std().item() == pytest.approx(4.0, rel=0.02)  # N(0, 1) / lr_mul
    assert EqualizedConv2d(3, 5, 1, bias=False).bias is None
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(conv(x), eq_conv2d(x, conv.weight, conv.bias, lr_mul=0.5, pixel_norm=True, down=True))
    lin = EqualizedLinear(7, 3, gain=1.0, activation="linear")
    v = torch.randn(4, 7)
    torch.testing.assert_close(lin(v), eq_linear(v, lin.weight, lin.bias, gain=1.0, activation="linear"))
    torch.testing.assert_close(PixelNorm()(x), pixel_norm(x))


def test_discriminator_runs_the_fused_minibatch_stddev_kernel():
    """D's 4x4 block calls the cpu kernel (one raw op writes the 513 channels), forward and in the penalty."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Calls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func._schema.name)
            return func(*args, **(kwargs or {}))

    D = Discriminator(**SMALL, mbstd_num_features=2).double()
    assert D.blocks["2"].conv.weight.shape[1] == 16 + 2
    img = torch.randn(4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with Calls() as forward:
        scores = D(img, 3)
    assert "progan_fast::minibatch_stddev_forward" in forward.names and "aten::cat" not in forward.names
    with Calls() as backward:
        (grad,) = torch.autograd.grad(scores.sum(), img, create_graph=True)
        grad.square().sum().backward()
    assert "progan_fast::minibatch_stddev_backward" in backward.names


def test_bad_arguments():
    G, D = Generator(**SMALL), Discriminator(**SMALL)
    z = torch.randn(4, G.latent_size)
    img = torch.randn(4, 3, 16, 16)
    with pytest.raises(ValueError, match="res_log2"):
        G(z, 6)
    with pytest.raises(ValueError, match="res_log2"):
        D(img, 1)
    with pytest.raises(TypeError, match="res_log2"):
        G(z, 4.0)
    with pytest.raises(ValueError, match="alpha"):
        G(z, 4, float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        D(img, 4, 1.5)
    with pytest.raises(ValueError, match="z"):
        G(torch.randn(4, G.latent_size + 1), 4)
    with pytest.raises(ValueError, match="images"):
        D(img, 3)
    with pytest.raises(ValueError, match="images"):
        D(torch.randn(4, 1, 16, 16), 4)
    with pytest.raises(ValueError, match="group_size"):
        D(torch.randn(6, 3, 16, 16), 4)
    with pytest.raises(ValueError, match="resolution"):
        Generator(resolution=48)
    with pytest.raises(ValueError, match="resolution"):
        Discriminator(resolution=2)


def test_channels_last_end_to_end():
    G, D = Generator(channels_last=True, **SMALL), Discriminator(channels_last=True, **SMALL)
    seen = []

    def hook(module, inputs, output):
        if output.shape[1] > 1 and output.shape[2] > 1:
            seen.append(output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous())

    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, EqualizedConv2d):
            m.register_forward_hook(hook)
    D(G(torch.randn(4, G.latent_size), 5, 0.5), 5, 0.5)
    assert len(seen) > 10 and all(seen)
