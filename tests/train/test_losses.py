"""WGAN-GP losses against closed forms for discriminators whose input gradient is known analytically."""
import pytest
import torch

from progan_fast.train import losses


class QuadraticD(torch.nn.Module):
    """D(x) = 0.5 * (w . x)^2 + b, so grad_x D = (w . x) w and |grad| = |w . x| |w| per sample."""

    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.calls = []

    def forward(self, x, res_log2, alpha):
        self.calls.append((res_log2, alpha))
        s = (x * self.w).flatten(1).sum(1, keepdim=True)
        return 0.5 * s.square() + self.b


def test_discriminator_loss_closed_form():
    torch.manual_seed(1)
    D = QuadraticD((3, 4, 4))
    reals = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    fakes = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    mix = torch.rand(5, 1, 1, 1, dtype=torch.float64)
    loss, parts = losses.discriminator_loss(D, reals, fakes, mix, 2, 0.25)
    assert D.calls == [(2, 0.25)] * 3

    w, b = D.w.detach(), D.b.detach()
    dr = 0.5 * (reals * w).flatten(1).sum(1) ** 2 + b
    df = 0.5 * (fakes * w).flatten(1).sum(1) ** 2 + b
    xhat = reals + (fakes - reals) * mix
    norms = (xhat * w).flatten(1).sum(1).abs() * w.norm()
    expected = (df - dr + 10.0 * (norms - 1.0) ** 2 + 0.001 * dr ** 2).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(parts["D_gp"], (10.0 * (norms - 1.0) ** 2).mean())
    torch.testing.assert_close(parts["D_drift"], (0.001 * dr ** 2).mean())

    # The penalty's parameter gradient goes through the double backward; check it against autograd of the closed
    # form written with w as the variable.
    loss.backward()
    w2 = w.clone().requires_grad_(True)
    s_hat = (xhat * w2).flatten(1).sum(1)
    closed = ((0.5 * (fakes * w2).flatten(1).sum(1) ** 2 + b) - (0.5 * (reals * w2).flatten(1).sum(1) ** 2 + b)
              + 10.0 * (s_hat.abs() * w2.norm() - 1.0) ** 2
              + 0.001 * (0.5 * (reals * w2).flatten(1).sum(1) ** 2 + b) ** 2).mean()
    (gw,) = torch.autograd.grad(closed, w2)
    torch.testing.assert_close(D.w.grad, gw, rtol=1e-8, atol=1e-8)


def test_target_scaling():
    torch.manual_seed(2)
    D = QuadraticD((1, 4, 4))
    reals, fakes = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    mix = torch.rand(2, 1, 1, 1, dtype=torch.float64)
    _, parts = losses.discriminator_loss(D, reals, fakes, mix, 2, 1.0, wgan_target=750.0, wgan_lambda=10.0)
    xhat = reals + (fakes - reals) * mix
    norms = (xhat * D.w.detach()).flatten(1).sum(1).abs() * D.w.detach().norm()
    torch.testing.assert_close(parts["D_gp"], (10.0 / 750.0 ** 2 * (norms - 750.0) ** 2).mean())


def test_grad_scale_is_undone():
    torch.manual_seed(3)
    D = QuadraticD((2, 4, 4))
    reals, fakes = torch.randn(4, 2, 4, 4, dtype=torch.float64), torch.randn(4, 2, 4, 4, dtype=torch.float64)
    mix = torch.rand(4, 1, 1, 1, dtype=torch.float64)
    plain, _ = losses.discriminator_loss(D, reals, fakes, mix, 2, 1.0)
    scaled, parts = losses.discriminator_loss(D, reals, fakes, mix, 2, 1.0, grad_scale=1024.0)
    torch.testing.assert_close(plain, scaled)
    assert bool(parts["gp_grad_finite"])


def test_generator_loss():
    D = QuadraticD((1, 4, 4))
    fakes = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    loss, scores = losses.generator_loss(D, fakes, 3, 0.5)
    torch.testing.assert_close(loss, -scores.mean())


def test_mix_shape_checked():
    D = QuadraticD((1, 4, 4))
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="mix"):
        losses.discriminator_loss(D, x, x, torch.rand(3, dtype=torch.float64), 2, 1.0)


@pytest.fixture
def restore_backend():
    from progan_fast import backends
    previous = backends.get_backend()
    yield
    backends.set_backend(previous)


def _first_losses(tiny_config, backend, steps=4):
    from progan_fast.train.loop import Trainer
    trainer = Trainer(tiny_config(backend=backend, lod_training_kimg=0.016), None, progress=False)
    out = []
    for _ in range(steps):
        sched = trainer.schedule()
        trainer.apply_schedule(sched)
        out.append(trainer.d_step(sched, sched.minibatch))
        trainer.ema_update()
        trainer.cur_nimg += sched.minibatch
        out.append(trainer.g_step(sched, sched.minibatch))
    return out, sched


def test_fused_and_reference_backends_agree(tiny_config, restore_backend):
    # Four D and G steps from the same seed, crossing into the 4->8 fade: the fused CPU kernels and the reference
    # ops must give the same losses up to float32 rounding.
    fused, sched = _first_losses(tiny_config, "cpu")
    ref, _ = _first_losses(tiny_config, "reference")
    assert sched.resolution == 8 and 0 < sched.alpha < 1
    assert None not in fused and None not in ref
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(ref), rtol=1e-4, atol=1e-5)


def test_mixed_precision_steps(tiny_config):
    from progan_fast.train.loop import Trainer
    fp32, _ = _first_losses(tiny_config, "auto", steps=1)
    for amp in ("bf16", "fp16"):
        trainer = Trainer(tiny_config(amp=amp), None, progress=False)
        values = []
        for _ in range(3):
            sched = trainer.schedule()
            trainer.apply_schedule(sched)
            values += [trainer.d_step(sched, 8), trainer.g_step(sched, 8)]
        assert trainer.nonfinite_skips == 0
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.D.parameters())
        if amp == "bf16":
            assert None not in values
            assert values[0] == pytest.approx(fp32[0], rel=0.05)  # same first batch, bf16 rounding only
        else:
            # The default initial loss scale (2^16) overflows the penalty's input gradient: that step is skipped
            # as an overflow (not a non-finite loss) and the scale backs off.
            assert trainer.fp16_overflows >= 1 and trainer.D_scaler.get_scale() < 2.0 ** 16
            assert values[-2] is not None and values[-1] is not None
