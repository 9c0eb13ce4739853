"""progan_fast.patch on pro-gan-pth 3.4 (installed from PyPI): numerics, state_dict, unpatch, idempotence, modes.

The library's channel table is 512 at every stage used here, so the networks are built with a small one (its
`nf` replaced during construction only); everything else is the library's own code, its WganGP loss included.
"""
import contextlib
import copy
import re
import warnings
from unittest import mock

import pytest
import torch
from torch import nn

import progan_fast
from progan_fast.patch import UnsupportedLibraryVersion, _common, pro_gan_pth

from .compare import assert_close, assert_same_grads, param_grads

from pro_gan_pytorch import custom_layers, losses, modules, networks  # noqa: E402  (after progan_fast: no order)

SMALL_NF = {1: 12, 2: 10, 3: 8, 4: 6}
LATENT = 12
BATCH = 4
ORIGINAL_PIXEL_NORM_FORWARD = custom_layers.PixelwiseNorm.__dict__["forward"]
LIBRARY_CLASSES = [custom_layers.EqualizedConv2d, custom_layers.EqualizedConvTranspose2d,
                   custom_layers.EqualizedLinear, custom_layers.PixelwiseNorm, custom_layers.MinibatchStdDev,
                   modules.GenInitialBlock, modules.GenGeneralConvBlock, modules.DisGeneralConvBlock,
                   modules.DisFinalBlock, networks.Generator, networks.Discriminator]


def build(depth, seed=0, num_classes=None):
    torch.manual_seed(seed)
    with mock.patch.object(networks, "nf", SMALL_NF.__getitem__):
        g = networks.Generator(depth=depth, latent_size=LATENT).double()
        d = networks.Discriminator(depth=depth, latent_size=LATENT, num_classes=num_classes).double()
    return g, d


def _transpose_conv_as_published(self, x, output_size=None):
    assert output_size is None
    return torch.conv_transpose2d(x, self.weight * self.scale, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


@contextlib.contextmanager
def library_reference():
    """pro-gan-pth 3.4 as published, except EqualizedConvTranspose2d.forward, which raises a TypeError on current
    torch: the same math (weight * scale, bias unscaled) with the output padding its call to torch's private
    `_output_padding` meant (the module's own when output_size is None)."""
    with mock.patch.object(custom_layers.EqualizedConvTranspose2d, "forward", _transpose_conv_as_published):
        yield


def wgan_gp_step(g, d, depth, alpha, seed=1):
    """pro-gan-pth's WganGP: the D loss (with the gradient penalty's double backward) and the G loss, with the
    parameter gradients of each."""
    torch.manual_seed(seed)
    z = torch.randn(BATCH, LATENT, dtype=torch.float64)
    real = torch.randn(BATCH, 3, 2 ** depth, 2 ** depth, dtype=torch.float64)
    loss = losses.WganGP()
    g.zero_grad(set_to_none=True)
    d.zero_grad(set_to_none=True)
    fake = g(z, depth, alpha)
    d_loss = loss.dis_loss(d, real, fake.detach(), depth, alpha)
    d_loss.backward()
    d_grads = param_grads(d)
    d.zero_grad(set_to_none=True)
    g_loss = loss.gen_loss(d, real, g(z, depth, alpha), depth, alpha)
    g_loss.backward()
    return {"fake": fake.detach(), "real_scores": d(real, depth, alpha).detach(), "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(), "d_grads": d_grads, "g_grads": param_grads(g),
            "d_grads_from_g_loss": param_grads(d)}


def assert_same_step(actual, expected):
    for key in ("fake", "real_scores", "d_loss", "g_loss"):
        assert_close(actual[key], expected[key], key)
    for key in ("d_grads", "g_grads", "d_grads_from_g_loss"):
        assert_same_grads(actual[key], expected[key], key)


def patch_models(mode, g, d, **options):
    if mode == "class":
        return [progan_fast.patch(**options)]
    return [progan_fast.patch(g, **options), progan_fast.patch(d, **options)]


def test_unpatched_library_fails_on_current_torch():
    """Why the patch must replace EqualizedConvTranspose2d: 3.4's forward raises in G's first layer."""
    g, _ = build(3)
    with pytest.raises(TypeError, match="num_spatial_dims"):
        g(torch.randn(2, LATENT, dtype=torch.float64), 3, 1.0)


@pytest.mark.parametrize("mode", ["instance", "class"])
@pytest.mark.parametrize("depth,alpha", [(2, 1.0), (3, 0.0), (3, 0.37), (4, 0.37), (4, 1.0)])
def test_wgan_gp_step_matches_library(mode, depth, alpha):
    g, d = build(depth)
    with library_reference():
        expected = wgan_gp_step(g, d, depth, alpha)
    if mode == "instance":
        g, d = copy.deepcopy(g), copy.deepcopy(d)
    reports = patch_models(mode, g, d)
    assert all(reports)
    assert_same_step(wgan_gp_step(g, d, depth, alpha), expected)


@pytest.mark.parametrize("switch", ["pixel_norm", "eq_conv", "mbstd", "fade", "resample"])
def test_each_switch_off_matches_library(switch):
    depth, alpha = 4, 0.37
    g, d = build(depth)
    with library_reference():
        expected = wgan_gp_step(g, d, depth, alpha)
    options = {switch: False}
    if switch == "eq_conv":
        options["resample"] = False
    patch_models("instance", g, d, **options)
    assert_same_step(wgan_gp_step(g, d, depth, alpha), expected)


def test_instance_patch_fuses_blocks_and_calls_the_public_ops():
    """The patched blocks run the fused forms through progan_fast.ops (spied), not the layers one by one."""
    depth = 4
    g, d = build(depth)
    progan_fast.patch(g)
    progan_fast.patch(d)
    calls = []
    real = {name: getattr(progan_fast.ops, name) for name in ("eq_conv2d", "upsample_blend", "downsample_blend",
                                                             "minibatch_stddev", "pixel_norm")}

    def spy(name):
        def wrapper(*args, **kwargs):
            calls.append((name, kwargs.get("up", False)))
            return real[name](*args, **kwargs)
        return wrapper

    with contextlib.ExitStack() as stack:
        for name in real:
            stack.enter_context(mock.patch.object(pro_gan_pth.ops, name, spy(name)))
        g(torch.randn(BATCH, LATENT, dtype=torch.float64), depth, 0.5)
        d(torch.randn(BATCH, 3, 16, 16, dtype=torch.float64), depth, 0.5)
    assert calls.count(("eq_conv2d", True)) == depth - 2      # each G block's nearest-up + conv, fused
    assert ("upsample_blend", False) in calls and ("downsample_blend", False) in calls
    assert ("minibatch_stddev", False) in calls and ("pixel_norm", False) in calls


def test_forward_hook_on_a_layer_sends_its_block_to_the_library_path():
    depth = 3
    g, d = build(depth)
    z = torch.randn(BATCH, LATENT, dtype=torch.float64)
    with library_reference():
        expected = g(z, depth, 0.5)
    progan_fast.patch(g)
    seen = []
    g.layers[1].conv_1.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert_close(g(z, depth, 0.5), expected, "hooked forward")
    assert seen == [(BATCH, SMALL_NF[2], 8, 8)]


def test_conditional_discriminator():
    depth = 3
    _, d = build(depth, num_classes=5)
    x = torch.randn(BATCH, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3, 4, 1])
    expected = d(x, depth, 0.4, labels)
    progan_fast.patch(d)
    assert_close(d(x, depth, 0.4, labels), expected, "conditional D")


def test_progressive_downsample_batch_matches_library():
    from pro_gan_pytorch.gan import ProGAN
    g, d = build(4)
    with contextlib.redirect_stdout(None):
        trainer = ProGAN(g, d, use_ema=False)
    real = torch.rand(BATCH, 3, 16, 16, dtype=torch.float64)
    cases = [(depth, alpha) for depth in (2, 3, 4) for alpha in (0.0, 0.3, 1.0)]
    expected = [trainer.progressive_downsample_batch(real, depth, alpha) for depth, alpha in cases]
    report = progan_fast.patch(trainer)
    assert report.count("ProGAN") == 1 and report.count("Generator") == 1
    for (depth, alpha), want in zip(cases, expected):
        assert_close(trainer.progressive_downsample_batch(real, depth, alpha), want, f"reals at {depth}, {alpha}")


def test_progan_training_loop_runs_patched(tmp_path):
    """pro-gan-pth's own ProGAN.train (WGAN-GP, EMA, checkpoints, sample grids) on torch 2.14 after patch()."""
    from pro_gan_pytorch.gan import ProGAN
    progan_fast.patch()
    g, d = build(3)
    g, d = g.float(), d.float()

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) * 2 - 1

    with contextlib.redirect_stdout(None):
        trainer = ProGAN(g, d, device=torch.device("cpu"))
        # two batches per epoch; 100 % fade-in at 8x8: alpha 0.5 then 1
        trainer.train(Images(), epochs=[1, 1], batch_sizes=[4, 4], fade_in_percentages=[50, 100], batch_repeats=1,
                      num_samples=4, num_workers=0, feedback_factor=1, save_dir=tmp_path, checkpoint_factor=1)
    assert trainer.gen_overflow_count == 0 and trainer.dis_overflow_count == 0
    saved = torch.load(tmp_path / "models" / "depth_3_epoch_1.bin", weights_only=False)
    assert set(saved["generator"]["state_dict"]) == set(networks.Generator(depth=3, latent_size=LATENT).state_dict())
    assert all(torch.isfinite(p).all() for p in trainer.gen.parameters())
    assert isinstance(trainer.gen_shadow.layers[1], modules.GenGeneralConvBlock)
    assert type(saved["gen_optim"]) is dict and saved["gen_optim"]["param_groups"][0]["betas"] == (0.0, 0.99)
    from pro_gan_pytorch import gan
    assert gan.torch is torch  # the trainer's module sees torch itself again after train()


def test_unpatched_training_loop_fails_on_current_torch(tmp_path):
    """Why ProGAN.train is wrapped: its Adam(betas=(0, 0.99)) is refused by current torch."""
    from pro_gan_pytorch.gan import ProGAN
    g, d = build(3)
    with contextlib.redirect_stdout(None), pytest.raises(ValueError, match="betas must be either both floats"):
        ProGAN(g, d).train([torch.zeros(3, 8, 8)] * 4, epochs=[1, 1], batch_sizes=[4, 4],
                           fade_in_percentages=[50, 50], num_workers=0, save_dir=tmp_path)


@pytest.mark.parametrize("mode", ["instance", "class"])
def test_state_dict_round_trip(mode):
    depth, alpha = 4, 0.6
    g, d = build(depth)
    other_g, other_d = build(depth, seed=5)
    z = torch.randn(BATCH, LATENT, dtype=torch.float64)
    x = torch.randn(BATCH, 3, 16, 16, dtype=torch.float64)
    unpatched_keys = (list(g.state_dict()), list(d.state_dict()))
    with library_reference():
        expected = g(z, depth, alpha), d(x, depth, alpha)
    patch_models(mode, other_g, other_d)
    assert (list(other_g.state_dict()), list(other_d.state_dict())) == unpatched_keys
    # unpatched -> patched
    other_g.load_state_dict(g.state_dict())
    other_d.load_state_dict(d.state_dict())
    assert_close(other_g(z, depth, alpha), expected[0], "G after loading an unpatched state_dict")
    assert_close(other_d(x, depth, alpha), expected[1], "D after loading an unpatched state_dict")
    # patched -> unpatched
    progan_fast.unpatch(other_g) if mode == "instance" else progan_fast.unpatch()
    fresh_g, fresh_d = build(depth, seed=9)
    fresh_g.load_state_dict(other_g.state_dict())
    fresh_d.load_state_dict(other_d.state_dict())
    with library_reference():
        assert_close(fresh_g(z, depth, alpha), expected[0], "unpatched G from a patched state_dict")
        assert_close(fresh_d(x, depth, alpha), expected[1], "unpatched D from a patched state_dict")


def _class_attributes():
    from pro_gan_pytorch.gan import ProGAN
    return {cls: dict(vars(cls)) for cls in LIBRARY_CLASSES + [ProGAN]}


def test_class_unpatch_is_exact():
    before = _class_attributes()
    report = progan_fast.patch()
    assert report.count("EqualizedConv2d") == 1 and report.count("ProGAN") == 2  # fade_reals, train
    assert custom_layers.EqualizedConv2d.__dict__["forward"] is not before[custom_layers.EqualizedConv2d]["forward"]
    assert isinstance(custom_layers.PixelwiseNorm.__dict__["forward"], staticmethod)
    restored = progan_fast.unpatch()
    assert len(restored) == len(report)
    after = _class_attributes()
    for cls, attributes in before.items():
        assert after[cls].keys() == attributes.keys(), cls
        for name, value in attributes.items():
            assert after[cls][name] is value, f"{cls.__name__}.{name} not restored"
    assert not progan_fast.unpatch()


def test_instance_unpatch_is_exact():
    depth, alpha = 4, 0.37
    g, d = build(depth)
    classes = [type(m) for m in list(g.modules()) + list(d.modules())]
    with library_reference():
        expected = wgan_gp_step(g, d, depth, alpha)
    progan_fast.patch(g)
    progan_fast.patch(d)
    assert [type(m) for m in list(g.modules()) + list(d.modules())] != classes
    report = progan_fast.unpatch(g)
    assert report.count("EqualizedConv2d") == sum(isinstance(m, custom_layers.EqualizedConv2d) for m in g.modules())
    progan_fast.unpatch(d)
    assert [type(m) for m in list(g.modules()) + list(d.modules())] == classes
    with library_reference():
        again = wgan_gp_step(g, d, depth, alpha)
    for key in ("fake", "d_loss", "g_loss"):
        assert torch.equal(again[key], expected[key]), key
    for name, grad in expected["d_grads"].items():
        assert (grad is None and again["d_grads"][name] is None) or torch.equal(again["d_grads"][name], grad)


def test_idempotent():
    g, d = build(3)
    first = progan_fast.patch()
    attributes = _class_attributes()
    second = progan_fast.patch()
    assert first and not second and second.skipped
    assert _class_attributes() == attributes
    # other switches at class level: pixel norm back to the library's, the blocks rebuilt for the new switches
    third = progan_fast.patch(pixel_norm=False)
    assert custom_layers.PixelwiseNorm.__dict__["forward"] is ORIGINAL_PIXEL_NORM_FORWARD
    assert modules.GenGeneralConvBlock.__dict__["forward"] is not attributes[modules.GenGeneralConvBlock]["forward"]
    assert third.count("GenGeneralConvBlock") == 1 and third.count("PixelwiseNorm") == 0
    progan_fast.unpatch()

    progan_fast.patch(g)
    types = [type(m) for m in g.modules()]
    again = progan_fast.patch(g)
    assert not again and [type(m) for m in g.modules()] == types
    # other switches replace the earlier ones: pixel norm layers go back to the library's class
    progan_fast.patch(g, pixel_norm=False)
    assert all(type(m) is custom_layers.PixelwiseNorm for m in g.modules()
               if isinstance(m, custom_layers.PixelwiseNorm))
    assert type(g.layers[1]) is not modules.GenGeneralConvBlock


def test_class_level_patch_reaches_models_built_before_and_after():
    g_before, _ = build(3)
    progan_fast.patch()
    g_after, _ = build(3)
    z = torch.randn(2, LATENT, dtype=torch.float64)
    assert g_before(z, 3, 1.0).shape == g_after(z, 3, 1.0).shape == (2, 3, 8, 8)


def test_instance_patch_leaves_other_models_alone():
    g, _ = build(3)
    other, _ = build(3)
    progan_fast.patch(g)
    assert all(type(m).__module__.startswith(("pro_gan_pytorch", "torch")) and
               not hasattr(type(m), _common.ORIGINAL_CLASS) for m in other.modules())
    with pytest.raises(TypeError, match="num_spatial_dims"):
        other(torch.randn(2, LATENT, dtype=torch.float64), 3, 1.0)


def test_deepcopy_of_a_patched_model_stays_patched():
    """pro-gan-pth's ProGAN deep-copies G for its EMA shadow."""
    g, _ = build(3)
    progan_fast.patch(g)
    shadow = copy.deepcopy(g)
    assert [type(m) for m in shadow.modules()] == [type(m) for m in g.modules()]
    assert shadow.layers[0].conv_1.weight is not g.layers[0].conv_1.weight


def test_print_shows_the_model_and_the_report():
    g, _ = build(3)
    text = repr(g)
    report = progan_fast.patch(g)
    assert repr(g) == text  # the instance-level classes keep the library's names
    printed = str(report)
    n_convs = sum(isinstance(m, custom_layers.EqualizedConv2d) for m in g.modules())
    assert "pro-gan-pth" in printed and "3.4" in printed and "GenGeneralConvBlock" in printed
    assert report.count("EqualizedConv2d") == n_convs == 5
    assert re.search(rf"EqualizedConv2d +instance +{n_convs} +forward", printed)
    assert "progan_fast.unpatch" in str(progan_fast.unpatch(g))


def test_subclass_that_overrides_forward_keeps_it():
    class Doubled(custom_layers.EqualizedConv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(Doubled(3, 4, (3, 3), padding=1), custom_layers.EqualizedConv2d(4, 4, (1, 1)))
    report = progan_fast.patch(model)
    assert type(model[0]) is Doubled and report.count("EqualizedConv2d") == 1
    assert any("overrides forward" in reason for _, _, reason in report.skipped)


def test_minibatch_stddev_keeps_the_library_assert():
    layer = custom_layers.MinibatchStdDev()
    progan_fast.patch(nn.Sequential(layer))
    with pytest.raises(AssertionError, match="divisible"):
        layer(torch.randn(6, 2, 4, 4))
    assert layer(torch.randn(8, 2, 4, 4)).shape == (8, 3, 4, 4)


def test_transposed_conv_with_output_size():
    layer = custom_layers.EqualizedConvTranspose2d(5, 3, (3, 3), stride=2, padding=1).double()
    x = torch.randn(2, 5, 7, 7, dtype=torch.float64)
    plain = nn.ConvTranspose2d(5, 3, 3, stride=2, padding=1).double()
    with torch.no_grad():
        plain.weight.copy_(layer.weight * layer.scale)
        plain.bias.copy_(layer.bias)
    progan_fast.patch(nn.Sequential(layer))
    for size in (None, [13, 13], [14, 14]):
        assert_close(layer(x, size), plain(x, size), f"output_size={size}")
    progan_fast.patch(nn.Sequential(layer), eq_conv=False, resample=False)  # the library math, current torch
    assert_close(layer(x, [14, 14]), plain(x, [14, 14]), "eq_conv=False")


def test_unsupported_version():
    g, _ = build(3)
    with mock.patch.object(pro_gan_pth, "installed_version", return_value="3.3"):
        with pytest.raises(UnsupportedLibraryVersion, match=r"pro-gan-pth 3\.3 .* supports pro-gan-pth 3\.4"):
            progan_fast.patch(g)
        with pytest.warns(UserWarning, match=r"pro-gan-pth 3\.3"):
            report = progan_fast.patch()
    assert not any(row.library == "pro-gan-pth" for row in report)
    assert not any(owner.__module__.startswith("pro_gan_pytorch") for owner, _ in _common._class_level)
    assert all(not hasattr(type(m), _common.ORIGINAL_CLASS) for m in g.modules())


def test_bad_switches():
    g, _ = build(2)
    with pytest.raises(TypeError, match="pixel_norm must be a bool"):
        progan_fast.patch(g, pixel_norm=1)
    with pytest.raises(ValueError, match="resample=True .* needs eq_conv=True"):
        progan_fast.patch(eq_conv=False)
    assert not _common._class_level
    # every switch off: only the compatibility forward of the transposed conv remains
    report = progan_fast.patch(g, resample=False, eq_conv=False, fade=False, mbstd=False, pixel_norm=False)
    assert [row.target for row in report] == ["EqualizedConvTranspose2d"]


def test_target_without_a_supported_library():
    model = nn.Sequential(nn.Conv2d(3, 3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = progan_fast.patch(model)
    assert not report and "no class of a supported library" in str(report)
    assert type(model[0]) is nn.Conv2d


def test_unpatch_of_a_model_says_when_its_classes_stay_patched():
    g, _ = build(2)
    progan_fast.patch()
    with pytest.warns(UserWarning, match=r"call progan_fast.unpatch\(\) to restore them"):
        report = progan_fast.unpatch(g)
    assert not report and _common.class_level_patched(custom_layers.EqualizedConv2d)


def test_import_progan_fast_does_not_import_the_libraries():
    import subprocess
    import sys
    code = ("import sys, progan_fast; progan_fast.patch; "
            "assert not [m for m in sys.modules if m.startswith('pro_gan_pytorch')], 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


def test_global_forward_hook_sends_blocks_to_the_library_path():
    depth = 3
    g, _ = build(depth)
    z = torch.randn(BATCH, LATENT, dtype=torch.float64)
    with library_reference():
        expected = g(z, depth, 0.5)
    progan_fast.patch(g)
    seen = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(type(module).__name__))
    try:
        out = g(z, depth, 0.5)
    finally:
        handle.remove()
    assert_close(out, expected, "forward under a global hook")
    assert seen.count("EqualizedConv2d") == 5 and seen.count("PixelwiseNorm") == 4


def test_data_parallel_replica_runs_the_patch_on_its_own_parameters():
    """nn.DataParallel builds each replica with Module._replicate_for_data_parallel (an object of the module's
    class sharing its __dict__ entries) and then gives it its own parameters: a replica of an instance-patched
    layer is patched too and computes with the replica's parameters (a forward bound in the instance's __dict__
    would keep using the original's)."""
    conv = custom_layers.EqualizedConv2d(3, 4, (3, 3), padding=1).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    reference = custom_layers.EqualizedConv2d(3, 4, (3, 3), padding=1).double()
    with torch.no_grad():
        reference.weight.copy_(2 * conv.weight)
        reference.bias.copy_(conv.bias + 1)
    progan_fast.patch(nn.Sequential(conv))
    replica = conv._replicate_for_data_parallel()
    replica._parameters["weight"] = 2 * conv.weight.detach()
    replica._parameters["bias"] = conv.bias.detach() + 1
    assert type(replica) is type(conv) and type(conv) is not custom_layers.EqualizedConv2d
    assert_close(replica(x), reference(x), "replica")


def test_pickle_of_a_patched_model_loads_as_the_library_model(tmp_path):
    """torch.save of a whole instance-patched model records the library's classes (it loads without the patch);
    copy.copy and copy.deepcopy keep the patch."""
    depth = 3
    g, _ = build(depth)
    z = torch.randn(BATCH, LATENT, dtype=torch.float64)
    with library_reference():
        expected = g(z, depth, 0.5)
    progan_fast.patch(g)
    torch.save(g, tmp_path / "g.pt")
    loaded = torch.load(tmp_path / "g.pt", weights_only=False)
    assert [type(m) for m in loaded.modules()] == [_common.original_class(m) for m in g.modules()]
    with library_reference():
        assert_close(loaded(z, depth, 0.5), expected, "unpickled model")
    assert type(copy.copy(g.layers[1])) is type(g.layers[1]) is type(copy.deepcopy(g).layers[1])
    assert copy.copy(g.layers[1]).conv_1 is g.layers[1].conv_1
    assert_close(g(z, depth, 0.5), expected, "patched model after pickling")
