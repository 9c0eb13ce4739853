"""progan_fast.patch on pytorch_GAN_zoo's PGAN layout (the stand-in in tests/patch/gan_zoo, written from its
documented math): float64 numerics of a WGAN-GP step as its trainer computes it (sums over the batch), fade-in in
its direction, its minibatch-stddev grouping, state_dict, unpatch, idempotence, class and instance modes."""
import contextlib
import copy
import sys
import types
from unittest import mock

import pytest
import torch
from torch import nn

import progan_fast
from progan_fast.patch import UnsupportedLibraryVersion, _common, gan_zoo

from .compare import assert_close, assert_same_grads, param_grads
from .gan_zoo.models.networks import custom_layers, mini_batch_stddev_module, progressive_conv_net
from .gan_zoo.models.networks.progressive_conv_net import DNet, GNet

LATENT, DEPTH0 = 10, 8
SCALE_DEPTHS = (7, 6, 5)
PACKAGE = progressive_conv_net.__name__[:-len(".networks.progressive_conv_net")]


def build(scales, seed=0, mbstd=True, equalized=True):
    torch.manual_seed(seed)
    g = GNet(LATENT, DEPTH0, equalizedlR=equalized)
    d = DNet(DEPTH0, miniBatchNormalization=mbstd, equalizedlR=equalized)
    for depth in SCALE_DEPTHS[:scales]:
        g.addScale(depth)
        d.addScale(depth)
    if not equalized:  # the unequalized layers keep torch's default init; give the biases values too
        with torch.no_grad():
            for p in list(g.parameters()) + list(d.parameters()):
                p.normal_(0, 0.3)
    return g.double(), d.double()


def wgan_gp_step(g, d, alpha, batch=8, seed=1):
    """pytorch_GAN_zoo's WGAN-GP: sums over the batch, drift 0.001 on reals, lambda 10 with per-sample mixing."""
    g.setNewAlpha(alpha)
    d.setNewAlpha(alpha)
    torch.manual_seed(seed)
    z = torch.randn(batch, LATENT, dtype=torch.float64)
    real = torch.randn(batch, 3, *g.getOutputSize(), dtype=torch.float64)
    g.zero_grad(set_to_none=True)
    d.zero_grad(set_to_none=True)
    fake = g(z)
    pred_real, pred_fake = d(real)[:, 0], d(fake.detach())[:, 0]
    d_loss = pred_fake.sum() - pred_real.sum() + 0.001 * pred_real.square().sum()
    eps = torch.rand(batch, 1, 1, 1, dtype=torch.float64)
    mixed = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(mixed)[:, 0].sum(), mixed, create_graph=True)
    d_loss = d_loss + 10 * (grad.view(batch, -1).norm(dim=1) - 1).square().sum()
    d_loss.backward()
    d_grads = param_grads(d)
    d.zero_grad(set_to_none=True)
    g_loss = -d(g(z))[:, 0].sum()
    g_loss.backward()
    out, features = d(real, getFeature=True)
    return {"fake": fake.detach(), "scores": out.detach(), "features": features.detach(), "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(), "d_grads": d_grads, "g_grads": param_grads(g),
            "d_grads_from_g_loss": param_grads(d)}


def assert_same_step(actual, expected):
    for key in ("fake", "scores", "features", "d_loss", "g_loss"):
        assert_close(actual[key], expected[key], key)
    for key in ("d_grads", "g_grads", "d_grads_from_g_loss"):
        assert_same_grads(actual[key], expected[key], key)


def patch_models(mode, g, d, **options):
    if mode == "class":
        return [progan_fast.patch(**options)]
    return [progan_fast.patch(g, **options), progan_fast.patch(d, **options)]


@pytest.mark.parametrize("mode", ["instance", "class"])
@pytest.mark.parametrize("scales,alpha", [(0, 0.0), (1, 0.45), (2, 0.45), (3, 0.7), (2, 0.0), (2, 1.0)])
def test_wgan_gp_step_matches_library(mode, scales, alpha):
    g, d = build(scales)
    expected = wgan_gp_step(g, d, alpha)
    if mode == "instance":
        g, d = copy.deepcopy(g), copy.deepcopy(d)
    assert all(patch_models(mode, g, d))
    assert_same_step(wgan_gp_step(g, d, alpha), expected)


@pytest.mark.parametrize("switch", ["pixel_norm", "eq_conv", "mbstd", "fade", "resample"])
def test_each_switch_off_matches_library(switch):
    g, d = build(2)
    expected = wgan_gp_step(g, d, 0.45)
    options = {switch: False}
    if switch == "eq_conv":
        options["resample"] = False
    patch_models("instance", g, d, **options)
    assert_same_step(wgan_gp_step(g, d, 0.45), expected)


@pytest.mark.parametrize("batch", [1, 2, 6, 8])
def test_minibatch_stddev_grouping(batch):
    """Contiguous groups, unbiased variance; one group when 4 does not divide the batch; zeros for groups of 1."""
    _, d = build(1)
    x = torch.randn(batch, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    expected = d(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    progan_fast.patch(d)
    out = d(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert_close(out, expected, "scores")
    assert_close(grad, expected_grad, "input gradient")


def test_unequalized_layers():
    g, d = build(2, equalized=False)
    expected = wgan_gp_step(g, d, 0.3)
    patch_models("instance", g, d)
    assert_same_step(wgan_gp_step(g, d, 0.3), expected)


def test_fade_without_a_previous_scale_fails_as_in_the_library():
    g, _ = build(0)
    g.alpha = 0.5  # setNewAlpha allows it; the library's forward then has no old path to blend
    z = torch.randn(2, LATENT, dtype=torch.float64)
    with pytest.raises(UnboundLocalError):
        g(z)
    progan_fast.patch(g)
    with pytest.raises(UnboundLocalError):
        g(z)


def test_generator_fuses_upsample_and_conv():
    scales = 3
    g, _ = build(scales)
    progan_fast.patch(g)
    calls = []
    eq_conv2d = progan_fast.ops.eq_conv2d

    def spy(*args, **kwargs):
        calls.append(kwargs.get("up", False))
        return eq_conv2d(*args, **kwargs)

    with mock.patch.object(gan_zoo.ops, "eq_conv2d", spy):
        g.setNewAlpha(0.5)
        g(torch.randn(2, LATENT, dtype=torch.float64))
    assert calls.count(True) == scales
    # groupScale0, two per scale, two toRGB (fade)
    assert len(calls) == 1 + 2 * scales + 2


@pytest.mark.parametrize("mode", ["instance", "class"])
def test_state_dict_round_trip(mode):
    g, d = build(2)
    other_g, other_d = build(2, seed=4)
    keys = list(g.state_dict()), list(d.state_dict())
    assert "formatLayer.module.weight" in keys[0] and "scaleLayers.1.0.module.bias" in keys[0]
    assert "decisionLayer.module.weight" in keys[1] and "groupScaleZero.1.module.weight" in keys[1]
    z = torch.randn(4, LATENT, dtype=torch.float64)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    expected = g(z), d(x)
    patch_models(mode, other_g, other_d)
    assert (list(other_g.state_dict()), list(other_d.state_dict())) == keys
    other_g.load_state_dict(g.state_dict())
    other_d.load_state_dict(d.state_dict())
    assert_close(other_g(z), expected[0], "G from an unpatched state_dict")
    assert_close(other_d(x), expected[1], "D from an unpatched state_dict")
    progan_fast.unpatch(other_g) if mode == "instance" else progan_fast.unpatch()
    fresh_g, fresh_d = build(2, seed=7)
    fresh_g.load_state_dict(other_g.state_dict())
    fresh_d.load_state_dict(other_d.state_dict())
    assert_close(fresh_g(z), expected[0], "unpatched G from a patched state_dict")
    assert_close(fresh_d(x), expected[1], "unpatched D from a patched state_dict")


def _class_attributes():
    classes = [custom_layers.ConstrainedLayer, custom_layers.EqualizedConv2d, custom_layers.EqualizedLinear,
               custom_layers.NormalizationLayer, GNet, DNet]
    return {cls: dict(vars(cls)) for cls in classes}


def test_class_level_patch_and_exact_unpatch():
    before = _class_attributes()
    functions = (custom_layers.Upscale2d, mini_batch_stddev_module.miniBatchStdDev,
                 progressive_conv_net.miniBatchStdDev, progressive_conv_net.Upscale2d)
    report = progan_fast.patch()
    assert any(row.library == "pytorch_GAN_zoo" and row.version == f"layout at {PACKAGE}.networks"
               for row in report)
    assert report.count("GNet", library="pytorch_GAN_zoo") == 1
    assert GNet.__dict__["forward"] is not before[GNet]["forward"]
    again = progan_fast.patch()
    assert not any(row.library == "pytorch_GAN_zoo" for row in again)
    progan_fast.unpatch()
    after = _class_attributes()
    for cls, attributes in before.items():
        assert after[cls].keys() == attributes.keys()
        for name, value in attributes.items():
            assert after[cls][name] is value, f"{cls.__name__}.{name} not restored"
    assert functions == (custom_layers.Upscale2d, mini_batch_stddev_module.miniBatchStdDev,
                         progressive_conv_net.miniBatchStdDev, progressive_conv_net.Upscale2d)


def test_instance_unpatch_is_exact():
    g, d = build(2)
    classes = [type(m) for m in list(g.modules()) + list(d.modules())]
    expected = wgan_gp_step(g, d, 0.45)
    report = progan_fast.patch(g)
    assert report.count("EqualizedConv2d") == sum(isinstance(m, custom_layers.EqualizedConv2d) for m in g.modules())
    progan_fast.patch(d)
    progan_fast.patch(d)  # idempotent
    progan_fast.unpatch(g)
    progan_fast.unpatch(d)
    assert [type(m) for m in list(g.modules()) + list(d.modules())] == classes
    again = wgan_gp_step(g, d, 0.45)
    for key in ("fake", "scores", "d_loss", "g_loss"):
        assert torch.equal(again[key], expected[key]), key


def test_growing_after_patching():
    """addScale after an instance patch adds library-class layers; patching again picks them up."""
    g, d = build(1)
    progan_fast.patch(g)
    g.addScale(5)
    g.double()
    new_layers = list(g.scaleLayers[-1]) + [g.toRGBLayers[-1]]
    assert all(not hasattr(type(m), _common.ORIGINAL_CLASS) for m in new_layers)
    report = progan_fast.patch(g)
    assert report.count("EqualizedConv2d") == 3
    assert all(hasattr(type(m), _common.ORIGINAL_CLASS) for m in new_layers)


@contextlib.contextmanager
def fake_layout(package, drop):
    """An imported module set in the GAN zoo layout that lacks `drop` in progressive_conv_net."""
    modules = {}
    for real in (custom_layers, mini_batch_stddev_module, progressive_conv_net):
        fake = types.ModuleType(real.__name__.replace(PACKAGE, package, 1))
        fake.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__") and k != drop})
        modules[fake.__name__] = fake
    with mock.patch.dict(sys.modules, modules):
        yield modules


def test_unrecognised_layout():
    with fake_layout("oldzoo", drop="DNet") as modules:
        with pytest.warns(UserWarning, match="pytorch_GAN_zoo layout under 'oldzoo'.*has no DNet"):
            report = progan_fast.patch()
        assert "oldzoo" in str(report)
        net = modules["oldzoo.networks.progressive_conv_net"]

        class Stranger(net.GNet):
            pass

        Stranger.__module__ = net.__name__
        g = Stranger(LATENT, DEPTH0)
        with pytest.raises(UnsupportedLibraryVersion, match="'oldzoo'"):
            progan_fast.patch(g)


def test_normalization_layer_and_other_wrapped_modules():
    norm = custom_layers.NormalizationLayer()
    wrapped = custom_layers.ConstrainedLayer(nn.Conv1d(3, 4, 3))   # not a conv2d / linear: the library's forward
    model = nn.Sequential(norm, wrapped).double()
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    expected = norm(x, 1e-4), wrapped(x)
    progan_fast.patch(model)
    assert_close(norm(x, 1e-4), expected[0], "NormalizationLayer with its epsilon")
    assert_close(wrapped(x), expected[1], "ConstrainedLayer(Conv1d)")


def test_without_minibatch_stddev():
    g, d = build(2, mbstd=False)
    expected = wgan_gp_step(g, d, 0.45)
    patch_models("class", g, d)
    assert_same_step(wgan_gp_step(g, d, 0.45), expected)
