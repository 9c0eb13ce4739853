"""The trainer against values computed by hand, not against itself: what D is shown at each point of the schedule,
and which backend's kernels actually run."""
import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import progan_fast
from progan_fast.train.config import TrainConfig
from progan_fast.train.data import create_dataset
from progan_fast.train.loop import Trainer


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    """A dataset of a single 8x8 image with distinct 2x2 blocks, and that image as uint8 HWC."""
    root = tmp_path_factory.mktemp("one")
    (root / "src").mkdir()
    image = np.random.default_rng(11).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    PIL.Image.fromarray(image).save(root / "src" / "x.png")
    create_dataset(root / "src", root / "ds", progress=False)
    return str(root / "ds"), image


def _config(data, **overrides):
    # 4x4 for 0.1 kimg, then the fade to 8x8 over 0.1 kimg; minibatch 4 (one stddev group).
    return TrainConfig(**dict(dict(data=data, resolution=8, lod_training_kimg=0.1, lod_transition_kimg=0.1,
                                   total_kimg=1.0, minibatch_base=4, minibatch_dict={}, fmap_base=16, fmap_max=8,
                                   latent_size=8, seed=3), **overrides))


def _reals_seen_by_d(trainer, cur_nimg):
    """The first input of D in a D step at cur_nimg (the reals; then come the fakes and the penalty's mix)."""
    seen = []
    handle = trainer.D.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        trainer.cur_nimg = cur_nimg
        sched = trainer.schedule()
        trainer.apply_schedule(sched)
        trainer.d_step(sched, 4)
    finally:
        handle.remove()
    return seen[0], sched


def _by_hand(image_hwc, size):
    """[-1, 1] float64 CHW of the dataset image at `size`: 2x2 block means of the float image (the dataset tool's
    levels), rounded once, then mapped like the official process_reals (x * 2/255 - 1)."""
    x = image_hwc.astype(np.float64).transpose(2, 0, 1)
    f = 8 // size
    x = np.rint(x.reshape(3, size, f, size, f).mean(axis=(2, 4)))
    return x * (2.0 / 255.0) - 1.0


def test_reals_shown_to_d_across_a_fade(one_image):
    data, image = one_image
    trainer = Trainer(_config(data), None, device="cpu", progress=False)

    # Stable 4x4 phase: the dataset's 4x4 level.
    reals, sched = _reals_seen_by_d(trainer, 40)
    assert (sched.resolution, sched.alpha) == (4, 1.0)
    np.testing.assert_allclose(reals.double().numpy(), np.broadcast_to(_by_hand(image, 4), (4, 3, 4, 4)),
                               rtol=0, atol=1e-6)

    # A quarter into the fade: 0.25 of the 8x8 image plus 0.75 of its 4x4 average shown at 8x8 (nearest).
    reals, sched = _reals_seen_by_d(trainer, 125)
    assert sched.resolution == 8 and sched.alpha == pytest.approx(0.25)
    x8 = _by_hand(image, 8)
    coarse = x8.reshape(3, 4, 2, 4, 2).mean(axis=(2, 4)).repeat(2, axis=1).repeat(2, axis=2)
    expected = coarse + sched.alpha * (x8 - coarse)
    np.testing.assert_allclose(reals.double().numpy(), np.broadcast_to(expected, (4, 3, 8, 8)), rtol=0, atol=1e-6)
    assert not np.allclose(expected, x8, atol=0.05)  # a fade that skipped the blend would show

    # After the fade: the 8x8 image itself.
    reals, sched = _reals_seen_by_d(trainer, 250)
    assert (sched.resolution, sched.alpha) == (8, 1.0)
    np.testing.assert_allclose(reals.double().numpy(), np.broadcast_to(x8, (4, 3, 8, 8)), rtol=0, atol=1e-6)


class _Namespaces(TorchDispatchMode):
    """Records the namespace of every op that reaches the dispatcher (aten, progan_fast, ...)."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func.namespace)
        return func(*args, **(kwargs or {}))


def _kernel_namespaces(trainer):
    with _Namespaces() as log:
        trainer.iteration()
        trainer.generate(trainer.grid_latents)
    return {name for name in log.seen if name.startswith("progan_fast")}


@pytest.fixture
def restore_backend():
    previous = progan_fast.get_backend()
    yield
    progan_fast.set_backend(previous)


@pytest.mark.skipif(not progan_fast.backends.available("cpu")[0], reason="the CPU extension is not built")
def test_trainer_runs_the_backend_its_config_names(one_image, restore_backend):
    data, _ = one_image
    fused = Trainer(_config(data, backend="cpu"), None, device="cpu", progress=False)
    reference = Trainer(_config(data, backend="reference"), None, device="cpu", progress=False)
    assert progan_fast.get_backend() is None  # constructing a trainer changes nothing outside it
    assert "progan_fast" in _kernel_namespaces(fused)
    assert _kernel_namespaces(reference) == set()
    # "auto" leaves the process's choice alone: here a forced reference backend.
    automatic = Trainer(_config(data, backend="auto"), None, device="cpu", progress=False)
    with progan_fast.use_backend("reference"):
        assert _kernel_namespaces(automatic) == set()
    assert "progan_fast" in _kernel_namespaces(automatic)
