"""train-step: one full WGAN-GP training iteration (benchmarks/train_step.py) on CPU float32, small config
(fmap_base 1024, fmap_max 128, latent 128, minibatch 16; smoke mode runs a smaller one), while fading (alpha 0.5) at 16x16 and 32x32.

Implementations side by side: `reference` (every op in plain PyTorch) and each progan_fast kernel backend that
runs here (`cpu`: ops without a CPU kernel still run their reference), for contiguous and channels_last models.
extra_info holds images/s (minibatch / median step time). The Adam state and weights advance with every round,
as in training. Timings are never asserted; only that the losses stay finite.
"""
import math

import pytest
import torch

from progan_fast import backends

from . import common
from .train_step import CONFIG, SMOKE_CONFIG, build_step

GROUP = "train-step"
ALPHA = 0.5
RESOLUTIONS = (16, 32)
LAYOUTS = ("nchw", "channels_last")
IMPLS = ["reference"] + [b for b in ("cpu",) if backends.available(b)[0]]

CASES = [(r, lay, impl) for r in RESOLUTIONS for lay in LAYOUTS for impl in IMPLS]


@pytest.mark.parametrize("resolution,layout,impl", CASES, ids=[f"{r}x{r}-{lay}-{impl}" for r, lay, impl in CASES])
def test_train_step(benchmark, bench_session, resolution, layout, impl):
    config = SMOKE_CONFIG if bench_session.smoke else CONFIG
    step = build_step(int(math.log2(resolution)), ALPHA, impl, channels_last=layout == "channels_last",
                      config=config)
    losses = []

    def run():
        losses.append(step())

    common.measure_throughput(
        benchmark, bench_session, run, group=GROUP, case=(f"{resolution}x{resolution}", layout), impl=impl,
        images=config["minibatch"],
        info={"resolution": resolution, "layout": layout, "alpha": ALPHA, "dtype": "float32", "config": dict(config)})
    d_loss, g_loss = losses[-1]
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss), (d_loss, g_loss)
