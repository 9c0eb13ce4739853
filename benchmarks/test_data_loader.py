"""data-loader: progan_fast.train.data.sample_batch throughput (batch 64, mirror off/on) at 32x32 and 128x128, set
against the time per image of one training iteration (benchmarks/train_step.py), to show whether the loader can be
the bottleneck.

Dataset: the embedded procedural default (default_dataset, 4096 images, 128x128 top level, about 260 MB of levels
that stay in the page cache) in a session temporary directory; smoke mode builds a 16-image one with
create_dataset from generated PNGs instead. extra_info: images/s, and `loader_vs_train_step` = loader images/s
over training images/s, where the training side is the fastest 32x32 train-step case measured earlier in this
session, or, when the train-step group did not run first (`pytest benchmarks` runs this module before it), one
measured here (cpu backend where available, NCHW, best of 3 iterations). A 32x32 iteration costs less per image
than a 128x128 one, so at 128x128 the ratio understates the loader's margin. Timings are never asserted.
"""
import shutil
import time

import numpy as np
import pytest
import torch

from progan_fast import backends
from progan_fast.train import data

from . import common
from .train_step import CONFIG, SMOKE_CONFIG, build_step

GROUP = "data-loader"
BATCH = 64
RESOLUTIONS = (32, 128)
TRAIN_RES = 32
CASES = [(r, m) for r in RESOLUTIONS for m in (False, True)]


@pytest.fixture(scope="session")
def loader_dataset(tmp_path_factory, bench_session):
    root = tmp_path_factory.mktemp("loader")
    if not bench_session.smoke:
        # about 260 MB: removed at the end of the session rather than left to pytest's tmp retention
        yield data.MultiResDataset(data.default_dataset(path=root / "shapes128", resolution=128, progress=False))
        shutil.rmtree(root, ignore_errors=True)
        return
    from PIL import Image

    from progan_fast.train.data.shapes import render_shapes
    src = root / "png"
    src.mkdir()
    for i, img in enumerate(render_shapes(16, 128, np.random.default_rng(0))):
        Image.fromarray(img.transpose(1, 2, 0)).save(src / f"{i:03d}.png")
    data.create_dataset(src, root / "ds", resolution=128, progress=False)
    yield data.MultiResDataset(root / "ds")


def session_config(session):
    return SMOKE_CONFIG if session.smoke else CONFIG


def _train_seconds_per_image(session):
    """(seconds per image of a 32x32 training iteration, where the number comes from)."""
    config = session_config(session)
    measured = [(rec["median_s"] / config["minibatch"], name)
                for name, rec in getattr(session, "train_steps", {}).get(TRAIN_RES, {}).items()]
    if measured:
        best = min(measured)
        return best[0], f"fastest {TRAIN_RES}x{TRAIN_RES} case of this session's train-step group ({best[1]})"
    impl = "cpu" if backends.available("cpu")[0] else "reference"
    step = build_step(TRAIN_RES.bit_length() - 1, 0.5, impl, channels_last=False, config=config)
    threads = torch.get_num_threads()
    if session.smoke:
        torch.set_num_threads(1)
    try:
        step()
        best = float("inf")
        for _ in range(1 if session.smoke else 3):
            start = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return best / config["minibatch"], f"{TRAIN_RES}x{TRAIN_RES} {impl} nchw iteration measured here"


@pytest.fixture(scope="session")
def train_seconds_per_image(bench_session):
    cache = {}

    def get():
        if "value" not in cache:
            cache["value"] = _train_seconds_per_image(bench_session)
        return cache["value"]
    return get


@pytest.mark.parametrize("resolution,mirror", CASES,
                         ids=[f"{r}x{r}-{'mirror' if m else 'plain'}" for r, m in CASES])
def test_data_loader(benchmark, bench_session, loader_dataset, train_seconds_per_image, resolution, mirror):
    res_log2 = resolution.bit_length() - 1
    gen = torch.Generator().manual_seed(0)
    batches = []

    def run():
        batches.append(data.sample_batch(loader_dataset, res_log2, BATCH, gen, mirror=mirror))
        del batches[:-1]

    seconds = common.measure_throughput(
        benchmark, bench_session, run, group=GROUP, case=(f"{resolution}x{resolution}", "mirror" if mirror else "plain"),
        impl="sample_batch", images=BATCH,
        info={"resolution": resolution, "mirror": mirror, "batch": BATCH, "dataset_images": loader_dataset.num_images})
    train_s, source = train_seconds_per_image()
    loader_s = seconds / BATCH
    benchmark.extra_info.update({
        "train_step_ms_per_image": train_s * 1e3, "train_step_source": source,
        "loader_vs_train_step": train_s / loader_s,
        "loader_share_of_serial_step": loader_s / (loader_s + train_s),
    })
    out = batches[-1]
    assert out.shape == (BATCH, 3, resolution, resolution) and out.dtype == torch.float32
    assert -1.0 <= out.min().item() and out.max().item() <= 1.0
