"""Checkpoints: atomic, weights_only-loadable, and a resumed run equals an uninterrupted one bit for bit."""
import os
import random

import pytest
import torch

from progan_fast.train import checkpoint
from progan_fast.train.loop import NonFiniteLossError, Trainer


def assert_same_state(a, b):
    for name in ("G", "D", "Gs"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key} differs"
    for name in ("G_opt", "D_opt"):
        sa, sb = getattr(a, name).state_dict()["state"], getattr(b, name).state_dict()["state"]
        assert sa.keys() == sb.keys()
        for idx in sa:
            for key in sa[idx]:
                assert torch.equal(sa[idx][key], sb[idx][key]), f"{name} state {idx}.{key} differs"
    assert torch.equal(a.data_gen.get_state(), b.data_gen.get_state())
    assert torch.equal(a.latent_gen.get_state(), b.latent_gen.get_state())
    assert a.cur_nimg == b.cur_nimg and a.prev_lod == b.prev_lod
    for name in ("G_scaler", "D_scaler"):
        assert getattr(a, name).state_dict() == getattr(b, name).state_dict(), name
    assert (a.fp16_overflows, a.nonfinite_skips) == (b.fp16_overflows, b.nonfinite_skips)


def test_resume_is_bit_exact(tiny_config, tmp_path):
    # The stop at 0.15 kimg falls inside the 4->8 fade; the continuation crosses the end of the fade (an Adam
    # reset) and a resolution with new layers.
    full = Trainer(tiny_config(total_kimg=0.3), str(tmp_path / "full"), progress=False)
    full.run()

    first = Trainer(tiny_config(total_kimg=0.15), str(tmp_path / "split"), progress=False)
    summary = first.run()
    assert 150 <= summary["cur_nimg"] < 300
    path = summary["checkpoint"]
    assert os.path.isfile(path)
    ckpt = torch.load(path, weights_only=True)  # plain tensors and Python values only
    assert ckpt["cur_nimg"] == summary["cur_nimg"]
    assert [f for f in os.listdir(tmp_path / "split") if f.endswith(".tmp")] == []

    resumed = Trainer(tiny_config(total_kimg=0.3), str(tmp_path / "split"), progress=False,
                      resume=checkpoint.load(path))
    resumed.run()
    assert_same_state(full, resumed)


def test_resume_is_bit_exact_under_fp16_loss_scaling(tiny_config, tmp_path):
    # The loss scale starts at 2^16, overflows in the first D steps and backs off: a resume that forgot the
    # scalers' state would start over at 2^16, skip steps the straight run took, and drift.
    config = dict(amp="fp16", lod_training_kimg=0.05, lod_transition_kimg=0.05)
    full = Trainer(tiny_config(total_kimg=0.128, **config), str(tmp_path / "full"), progress=False)
    full.run()
    first = Trainer(tiny_config(total_kimg=0.064, **config), str(tmp_path / "split"), progress=False)
    path = first.run()["checkpoint"]
    ckpt = checkpoint.load(path)
    assert ckpt["D_scaler"]["scale"] < 2.0 ** 16 and ckpt["fp16_overflows"] >= 1
    resumed = Trainer(tiny_config(total_kimg=0.128, **config), str(tmp_path / "split"), progress=False,
                      resume=ckpt)
    resumed.run()
    assert_same_state(full, resumed)


def test_resume_restores_the_global_random_states(tiny_config):
    # torch's and Python's global generators (used by user code, augmentations, dropout) continue where the
    # checkpoint left them, whatever happened to them in between.
    trainer = Trainer(tiny_config(), None, progress=False)
    trainer.iteration()
    torch.rand(3)
    random.random()
    state = trainer.state_dict()
    expected = (torch.rand(5), random.random())
    torch.manual_seed(12345)
    random.seed(54321)
    Trainer(tiny_config(), None, progress=False, resume=state)
    got = (torch.rand(5), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        checkpoint.save({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["c.pt"]
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    current = os.umask(0)
    os.umask(current)
    return current


def test_load_rejects_foreign_files(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a progan_fast checkpoint"):
        checkpoint.load(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "missing.pt")


def _poison_d(trainer, at_calls):
    """Makes D return NaN on the given forward calls (counted from 0)."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        n = calls["n"]
        calls["n"] += 1
        return output * float("nan") if n in at_calls else output

    trainer.D.register_forward_hook(hook)


def test_nonfinite_loss_is_skipped_and_counted(tiny_config):
    trainer = Trainer(tiny_config(total_kimg=0.064), None, progress=False, log=lambda *a, **k: None)
    # D step 0 uses D calls 0-2 (reals, fakes, mix), G step 0 call 3, D step 1 calls 4-6 ...
    _poison_d(trainer, {0, 3})
    before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    trainer.iteration()
    assert trainer.nonfinite_skips == 2
    for p in list(trainer.D.parameters()) + list(trainer.G.parameters()) + list(trainer.Gs.parameters()):
        assert torch.isfinite(p).all()
    assert any(not torch.equal(before[k], v) for k, v in trainer.D.state_dict().items())  # later steps ran


def test_nonfinite_loss_can_stop(tiny_config):
    trainer = Trainer(tiny_config(nonfinite="stop"), None, progress=False)
    _poison_d(trainer, {0})
    with pytest.raises(NonFiniteLossError, match="non-finite D loss"):
        trainer.iteration()


def test_ema_uses_previous_g_and_copies_buffers(tiny_config):
    trainer = Trainer(tiny_config(ema_beta=0.9), None, progress=False)
    with torch.no_grad():
        for p in trainer.G.parameters():
            p.add_(1.0)  # make G and Gs differ
    g0 = [p.detach().clone() for p in trainer.G.parameters()]
    s0 = [p.detach().clone() for p in trainer.Gs.parameters()]
    sched = trainer.schedule()
    trainer.apply_schedule(sched)
    trainer.d_step(sched, 8)  # D steps do not touch G ...
    trainer.ema_update()  # ... so Gs moves towards the G of the previous G step
    for s, s_before, g in zip(trainer.Gs.parameters(), s0, g0):
        torch.testing.assert_close(s, 0.9 * s_before + 0.1 * g)
    for b_s, b_g in zip(trainer.Gs.buffers(), trainer.G.buffers()):
        assert torch.equal(b_s, b_g)


@pytest.mark.parametrize("reset", [True, False])
def test_adam_state_reset_on_lod_change(tiny_config, reset):
    trainer = Trainer(tiny_config(reset_opt_for_new_lod=reset), None, progress=False)
    steps = lambda opt: {int(s["step"]) for s in opt.state.values()}  # noqa: E731
    trainer.iteration()  # 4x4, lod 1
    assert steps(trainer.D_opt) == {4} and steps(trainer.G_opt) == {4}
    trainer.cur_nimg = 110  # inside the fade: floor(lod) changes from 1 to 0
    trainer.iteration()
    # Parameters of the 8x8 layers get their first Adam step here either way; 4x4 ones continue only without reset.
    assert steps(trainer.D_opt) == ({4} if reset else {4, 8})
    trainer.cur_nimg = 150  # still fading: floor and ceil unchanged, no reset
    trainer.iteration()
    assert steps(trainer.D_opt) == ({8} if reset else {8, 12})
