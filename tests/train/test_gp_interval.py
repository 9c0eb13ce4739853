"""Lazy gradient penalty (--gp-interval K): the penalty on every K-th D step with K times its weight, D not run on the
mix on the other steps, K = 1 the paper's loss, and a resume that continues the penalty's phase bit-exactly."""
import pytest
import torch

from progan_fast import cli, demo
from progan_fast.train import checkpoint, loop, losses
from progan_fast.train.config import TrainConfig
from progan_fast.train.loop import Trainer

from .test_losses import QuadraticD
from .test_resume import assert_same_state


def _inputs(seed, n=5):
    torch.manual_seed(seed)
    D = QuadraticD((3, 4, 4))
    reals = torch.randn(n, 3, 4, 4, dtype=torch.float64)
    fakes = torch.randn(n, 3, 4, 4, dtype=torch.float64)
    mix = torch.rand(n, 1, 1, 1, dtype=torch.float64)
    return D, reals, fakes, mix


def test_loss_without_the_penalty_runs_d_twice_and_keeps_the_drift():
    D, reals, fakes, mix = _inputs(1)
    loss, parts = losses.discriminator_loss(D, reals, fakes, mix, 2, 0.25, gradient_penalty=False)
    assert D.calls == [(2, 0.25)] * 2  # reals and fakes; not the mix
    w, b = D.w.detach(), D.b.detach()
    dr = 0.5 * (reals * w).flatten(1).sum(1) ** 2 + b
    df = 0.5 * (fakes * w).flatten(1).sum(1) ** 2 + b
    torch.testing.assert_close(loss, (df - dr + 0.001 * dr ** 2).mean())
    assert set(parts) == {"D_real", "D_fake", "D_drift"}
    # The mix is not read at all on such a step.
    loss_none, _ = losses.discriminator_loss(D, reals, fakes, None, 2, 0.25, gradient_penalty=False)
    assert torch.equal(loss, loss_none)


def test_gp_weight_scales_the_penalty_in_the_loss_only():
    D, reals, fakes, mix = _inputs(2)
    plain, p1 = losses.discriminator_loss(D, reals, fakes, mix, 2, 1.0)
    lazy, p4 = losses.discriminator_loss(D, reals, fakes, mix, 2, 1.0, gp_weight=4.0)
    torch.testing.assert_close(p1["D_gp"], p4["D_gp"])  # logged unweighted: comparable across K
    torch.testing.assert_close(lazy - plain, 3.0 * p1["D_gp"])
    # gp_weight 1.0 is the paper's loss bit for bit.
    same, _ = losses.discriminator_loss(D, reals, fakes, mix, 2, 1.0, gp_weight=1.0)
    assert torch.equal(same, plain)


def _record_d_losses(monkeypatch):
    calls = []
    real = losses.discriminator_loss

    def spy(D, reals, fakes, mix, *args, **kwargs):
        calls.append((kwargs["gradient_penalty"], kwargs["gp_weight"]))
        return real(D, reals, fakes, mix, *args, **kwargs)
    monkeypatch.setattr(loop, "discriminator_loss", spy)
    return calls


@pytest.mark.parametrize("k", [1, 3])
def test_penalty_runs_on_every_kth_d_step(tiny_config, monkeypatch, k):
    calls = _record_d_losses(monkeypatch)
    trainer = Trainer(tiny_config(gp_interval=k), None, progress=False)
    d_inputs = []
    # The penalty's mix is the only input of D that is a leaf requiring grad (G's step feeds D G's output).
    trainer.D.register_forward_pre_hook(
        lambda module, args: d_inputs.append(args[0].requires_grad and args[0].grad_fn is None))
    for _ in range(3):  # 12 D steps (4 minibatch repeats)
        trainer.iteration()
    assert trainer.d_steps == 12
    assert calls == [(step % k == 0, float(k)) for step in range(12)]
    # D runs on the mix on the penalty's steps only.
    assert sum(d_inputs) == len(range(0, 12, k))


def test_default_is_the_paper_and_old_configs_read_as_it():
    assert TrainConfig().gp_interval == 1
    stored = TrainConfig(total_kimg=1.0).to_dict()
    del stored["gp_interval"]  # a config.json / checkpoint written before the option existed
    assert TrainConfig.from_dict(stored).gp_interval == 1


def test_lazy_resume_is_bit_exact(tiny_config, tmp_path):
    # K = 3 does not divide the 4 D steps of an iteration, so the split at 160 images (20 D steps) falls in the
    # middle of a penalty period: the resumed run must continue its phase.
    full = Trainer(tiny_config(total_kimg=0.3, gp_interval=3), str(tmp_path / "full"), progress=False)
    full.run()
    first = Trainer(tiny_config(total_kimg=0.15, gp_interval=3), str(tmp_path / "split"), progress=False)
    summary = first.run()
    ckpt = checkpoint.load(summary["checkpoint"])
    assert ckpt["d_steps"] == summary["cur_nimg"] // 8 and ckpt["d_steps"] % 3 != 0
    resumed = Trainer(tiny_config(total_kimg=0.3, gp_interval=3), str(tmp_path / "split"), progress=False,
                      resume=ckpt)
    resumed.run()
    assert resumed.d_steps == full.d_steps
    assert_same_state(full, resumed)


def test_checkpoint_without_the_step_count_resumes(tiny_config, tmp_path):
    first = Trainer(tiny_config(total_kimg=0.064), str(tmp_path / "run"), progress=False)
    ckpt = checkpoint.load(first.run()["checkpoint"])
    del ckpt["d_steps"]  # written before --gp-interval existed
    resumed = Trainer(tiny_config(total_kimg=0.128, gp_interval=2), None, progress=False, resume=ckpt)
    assert resumed.d_steps == 0
    resumed.iteration()
    assert resumed.d_steps == 4


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_bad_gp_interval_in_the_config(value):
    with pytest.raises(ValueError, match="gp_interval must be a positive int"):
        TrainConfig(gp_interval=value).validate()


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "x"])
def test_bad_gp_interval_on_the_command_line(value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--gp-interval", value])
    assert exc.value.code == 2
    assert "progan-fast train: error: argument --gp-interval: expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        demo.build_parser().parse_args(["--gp-interval", value])
    assert exc.value.code == 2
    assert "argument --gp-interval: expected a positive integer" in capsys.readouterr().err


def test_gp_interval_flag_reaches_the_config():
    assert cli.config_overrides(cli.build_parser().parse_args(["train", "--gp-interval", "4"]))["gp_interval"] == 4
    assert "gp_interval" not in cli.config_overrides(cli.build_parser().parse_args(["train"]))
    assert demo.build_parser().parse_args(["--gp-interval", "4"]).gp_interval == 4
    assert demo.build_parser().parse_args([]).gp_interval == demo.DEMO.get("gp_interval", 1)
