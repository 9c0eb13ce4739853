"""Train with pro-gan-pth 3.4's own code on progan_fast's ops: the only change is `progan_fast.patch()`.

    pip install pro-gan-pth==3.4 --no-deps      # its metadata pins torch 1.10; it runs on current torch once patched
    python examples/patch_pro_gan_pth.py                 # 4x4 and 8x8, one epoch each: a few minutes on 2 cores
    python examples/patch_pro_gan_pth.py --winograd      # and the 3x3 convs by Winograd (a second line, opt-in)

Without the patch line, pro-gan-pth 3.4 stops at its generator's first layer on current torch (TypeError in
EqualizedConvTranspose2d.forward) and again at its optimizers (torch's Adam refuses its integer beta); with it,
the library's Generator, Discriminator and ProGAN.train run unchanged, on the fused ops, with the same numerics
and state_dict keys. benchmarks/test_patch.py times its training step with and without the patch. The library's
networks have 512 feature maps up to 32x32 and its loop repeats each batch 4 times, so CPU runs are slow.
"""
import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import progan_fast
from progan_fast.train.data.shapes import render_shapes

SAMPLES = 16  # images in pro-gan-pth's sample grid


class Shapes(torch.utils.data.Dataset):
    """progan_fast's procedural shapes (no download), as pro-gan-pth's loader expects: CHW floats in [-1, 1]."""

    def __init__(self, count, resolution):
        images = render_shapes(count, resolution, np.random.default_rng(0))
        self.images = torch.from_numpy(images).float() / 127.5 - 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def train(args):
    report = progan_fast.patch()  # <- the one added line (before building the models)
    print(report)
    if args.winograd:
        # Opt-in, not the library's float32 rounding: 3x3 convs on maps from 16x16 up by Winograd F(4x4, 3x3)
        # (about ten times a direct conv's rounding error; README, "Use it from another trainer").
        progan_fast.set_conv_algorithm("winograd")

    from pro_gan_pytorch.gan import ProGAN
    from pro_gan_pytorch.networks import Discriminator, Generator

    depth = args.depth
    gen, dis = Generator(depth=depth, latent_size=args.latent), Discriminator(depth=depth, latent_size=args.latent)
    with contextlib.redirect_stdout(None):  # ProGAN prints both networks
        progan = ProGAN(gen, dis, device=torch.device("cpu"))
    save_dir = Path(args.out or tempfile.mkdtemp(prefix="pro_gan_pth_"))
    start = time.perf_counter()
    progan.train(Shapes(args.images, 2 ** depth), epochs=[args.epochs] * (depth - 1),
                 batch_sizes=[args.batch] * (depth - 1), fade_in_percentages=[50] * (depth - 1),
                 num_samples=SAMPLES, num_workers=0, feedback_factor=2, save_dir=save_dir, checkpoint_factor=args.epochs)
    print(f"trained {depth - 1} resolutions in {time.perf_counter() - start:.1f} s; samples and checkpoints in "
          f"{save_dir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=3, help="log2 of the final resolution (3: 8x8)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per resolution")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=16, help="size of the shapes dataset")
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--winograd", action="store_true",
                        help="also run the 3x3 convs by Winograd (faster; changes float32 rounding)")
    parser.add_argument("--out", default=None, help="pro-gan-pth's save_dir (default: a temporary directory)")
    args = parser.parse_args()
    if args.images < SAMPLES:  # pro-gan-pth draws its sample grid as one batch of that many reals
        parser.error(f"--images must be at least {SAMPLES} (pro-gan-pth's sample grid); got {args.images}")
    train(args)


if __name__ == "__main__":
    main()
