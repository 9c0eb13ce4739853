"""The demo's pass criterion: a generator must reproduce the reals' statistics and be diverse; one that memorised
8 training images passes the SWD half of it (measured: SWD 74.7 against a threshold of 106.7) and must fail."""
import numpy as np
import torch

from progan_fast import demo
from progan_fast.train.data.shapes import render_shapes
from progan_fast.train.evaluate import generate_uint8

# SWD x 1e3 of an untrained Gs, and of a generator replaying 8 training images, against the reals (1024 images,
# levels 32 and 16), as measured on the demo's dataset.
SWD_START, SWD_MEMORISER = 213.5, 74.7


class Memoriser(torch.nn.Module):
    """A 'generator' that returns one of 8 training images, picked by its latent."""

    def __init__(self, images_uint8):
        super().__init__()
        self.images = torch.nn.Parameter(images_uint8.float() / 127.5 - 1.0, requires_grad=False)
        self.latent_size = 64

    def forward(self, z, res_log2, alpha):
        return self.images[z[:, :len(self.images)].argmax(1)]


def test_a_generator_that_memorised_8_training_images_fails_the_demo_gate():
    shapes = torch.from_numpy(render_shapes(2 * demo.SWD_IMAGES, 32, np.random.default_rng(5)))
    reals, held_out = shapes[:demo.SWD_IMAGES], shapes[demo.SWD_IMAGES:]
    fakes = generate_uint8(Memoriser(reals[:8]), demo.SWD_IMAGES, 5, 1.0, seed=0)
    assert len(torch.unique(fakes.flatten(1), dim=0)) == 8

    passed, details = demo.gate(SWD_START, SWD_MEMORISER, fakes, reals)
    assert details["swd_ok"]  # the SWD criterion alone lets it through
    assert not details["diversity_ok"] and not passed
    assert details["nn_distance_fakes"] == 0.0

    # A generator as diverse as the data (new images from the same distribution) passes with the same SWDs.
    passed, details = demo.gate(SWD_START, SWD_MEMORISER, held_out, reals)
    assert passed and details["nn_distance_fakes"] > 0.9 * details["nn_distance_reals"]


def test_the_demo_picks_bf16_only_on_a_cpu_with_native_bf16_math():
    assert demo.auto_precision("cpu", {"avx512f", "avx512_bf16"})[0] == "bf16"
    assert demo.auto_precision("cpu", {"amx_tile", "amx_bf16"})[0] == "bf16"
    amp, reason = demo.auto_precision("cpu", {"avx2", "avx512f"})
    assert amp == "none" and "no native bf16" in reason
    assert demo.auto_precision("cuda:0", {"avx512_bf16"}) == ("none", "GPU run")
    assert demo.build_parser().parse_args([]).amp == "auto"
