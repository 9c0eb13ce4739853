"""`python -m progan_fast.demo` (`make demo`): a small progressive run on the embedded shapes dataset, 4x4 -> 32x32,
sized for about 10 minutes on 2 CPU cores (a GPU is used when visible).

It passes (exit status 0, else 1) when Gs both (1) reproduces the reals' statistics: its SWD against the reals at
32x32 ends below half the initial one, and (2) is diverse: the median distance from each of its images to the
nearest other one is at least half that of as many distinct reals. (1) alone is passed by a generator that
memorised 8 training images (SWD 75-108 against thresholds of about 107); (2) gives it 0. Outputs: the run
directory (sample grids, loss plot, CSV log, TensorBoard events, checkpoints) and swd.json in it.
"""
import argparse
import json
import os
import sys
import time

import torch

from .cpuinfo import native_bf16_flags
from .train.config import TrainConfig

# Channels per resolution (min(fmap_base / 2^stage, fmap_max)): 4: 64, 8: 64, 16: 64, 32: 32. Each phase is 2 kimg
# stable + 2 kimg fade, so 32x32 is reached at 12 kimg and trains for the remaining 44: the finest SWD level (edges)
# is the last to improve, and 32x32 is what bounds the total (about 10 ms per image in bf16, 13 in float32, on 2 idle
# cores). Measured in float32 at 41 kimg: 2 + 2 kimg phases SWD 33.8, 4 + 4 kimg phases 37.8; at 64 kimg of 4 + 4,
# 28.2. Minibatch 16 gives twice the iterations of 32 for the same images.
# ema_beta 0.99 instead of TF's 0.999: the demo has about 3500 iterations, and with 0.999 Gs would still hold 3% of
# its random initial weights at the end and lag the last ~1000 iterations.
# Learning rate 0.005 (TF: 0.001): at 56 kimg (bf16, one thread per run, SWD of Gs) 24.5 / 24.6 over two seeds
# against 27.8 / 29.7 with 0.003, which itself beat 0.001 (1.5x lower SWD after 6 kimg at 8x8); 0.008 gave 34.0.
# What did not help at 56 kimg: a longer EMA (0.995: 27.8, 0.998: 29.7; only Gs changes, so one run compares them),
# minibatch 32 at 32x32 (35.5: half the iterations) or 8 (27.8, and slower per image), twice the channels at 32x32
# (fmap_base 1024: 27.6 at 1.9x the time per image), and decaying the learning rate over the last 20 kimg (30.4).
# Also worse at 56 kimg (one thread, seeds 1000 / 1001, against 24.5 / 24.6): 1 + 1 kimg phases (32x32 from 6 kimg;
# 27.1 / 40.4, the second stuck with D far ahead) and D's lr 0.0075 with G's 0.005 (28.6 / 27.4). EMA 0.995 gave
# 23.5 / 23.8 at 56 kimg. The final SWD moves by up to 3 with the evaluation seed (1024 images): compare runs at the
# same evaluation seed, and read a single run's value as +-2.
# On a CPU with AMX (bf16 channels_last: 1.65x float32 NCHW on these networks) 72 kimg fit about 10 minutes: seeds
# 1000 / 1001 / 1002 gave 18.2 / 24.9 / 30.5 there against 26.8 / 28.3 / 35.2 at 56 kimg (one thread per run). Runs
# differ by more than 16 extra kimg gain, so the budget stays 56 kimg everywhere (benchmarks/RESULTS.md).
# Two data-parallel processes (one thread each) gave 0.9x the iterations/s of one process at minibatch 16, and
# at 16 each 1.43x the images/s but 0.71x the iterations: the demo stays one process (RESULTS.md).
# The lazy gradient penalty (--gp-interval K: the penalty on every K-th D step, weighted x K) gives 1.18x (K 2) /
# 1.27x (K 4) / 1.41x (K 8) the iterations/s at 32x32, so 66 / 70 kimg fit the time of 56; but it costs more per
# kimg than the extra kimg return (one thread, seeds 1000 / 1001, against 24.5 / 24.6): K 4 at 70 kimg 24.7 / 30.1,
# K 2 at 66 kimg 24.8 / 26.1, K 4 at 56 kimg 27.6 / 34.6. The demo keeps the penalty on every step.
# D's lr 0.0035 with G's 0.005 (the other way from the 0.0075 above): 24.7 / 28.3 at 56 kimg, same seeds.
DEMO = dict(resolution=32, start_resolution=4, total_kimg=56.0, lod_training_kimg=2.0, lod_transition_kimg=2.0,
            minibatch_base=16, minibatch_dict={}, fmap_base=512, fmap_max=64, latent_size=64, G_lrate=0.005,
            D_lrate=0.005, tick_kimg_base=2.0, tick_kimg_dict={}, network_snapshot_ticks=5, grid_size=8,
            ema_beta=0.99, seed=1000)
SWD_IMAGES = 1024
SWD_IMPROVEMENT = 0.5     # the final SWD must be below this fraction of the initial one
DIVERSITY_FRACTION = 0.5  # Gs's median nearest-neighbour distance must reach this fraction of the reals'


def gate(swd_start, swd_end, fakes, reals):
    """The demo's pass criterion (see the module docstring) from the average SWDs before and after training and
    equally many uint8 images of Gs and distinct reals. Returns (passed, details)."""
    from .metrics import nearest_neighbour_distances
    fakes_nn = nearest_neighbour_distances(fakes).median().item()
    reals_nn = nearest_neighbour_distances(reals).median().item()
    details = {"swd_start": swd_start, "swd_end": swd_end, "swd_ok": swd_end < SWD_IMPROVEMENT * swd_start,
               "nn_distance_fakes": fakes_nn, "nn_distance_reals": reals_nn,
               "diversity_ok": fakes_nn >= DIVERSITY_FRACTION * reals_nn}
    return details["swd_ok"] and details["diversity_ok"], details


def auto_precision(device, flags=None):
    """(amp, reason) for --amp auto: bf16 on a CPU run whose CPU has native bf16 math (measured on an AMD EPYC with
    AVX-512 BF16: same SWD after the demo's budget, 1.23x the images/s; on a Xeon with AMX, with channels_last,
    1.65x), float32 everywhere else."""
    on_cpu = str(device).startswith("cpu") or (device in (None, "auto") and not torch.cuda.is_available())
    if not on_cpu:
        return "none", "GPU run"
    found = native_bf16_flags(flags)
    if found:
        return "bf16", f"the CPU computes in bf16 natively ({', '.join(found)})"
    return "none", "the CPU has no native bf16 math (no AVX-512 BF16 or AMX)"


def build_parser():
    from .cli import _positive_int, _seed
    parser = argparse.ArgumentParser(prog="python -m progan_fast.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="run directory (default: runs/demo-<date>-<time>)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--kimg", type=float, default=DEMO["total_kimg"], help="total kimg (default %(default)s)")
    parser.add_argument("--amp", choices=("auto", "none", "bf16"), default="auto",
                        help="bf16: torch.autocast with float32 master weights; auto: bf16 on a CPU with native bf16 "
                             "math (AVX-512 BF16 or AMX), float32 otherwise (default %(default)s)")
    parser.add_argument("--gp-interval", type=_positive_int, default=DEMO.get("gp_interval", 1), metavar="K",
                        help="the gradient penalty on every K-th D step, weighted x K (default %(default)s)")
    parser.add_argument("--seed", type=_seed, default=DEMO["seed"], help="training seed (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)

    from .fileio import atomic_write
    from .train.data import default_dataset
    from .train.evaluate import evaluate_generator, evaluate_images, generate_uint8
    from .train.loop import Trainer

    start = time.time()
    out = args.out or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    amp, amp_reason = auto_precision(args.device) if args.amp == "auto" else (args.amp, "--amp " + args.amp)
    config = TrainConfig(data=default_dataset(resolution=32), **dict(DEMO, total_kimg=args.kimg, amp=amp,
                                                                    gp_interval=args.gp_interval, seed=args.seed))
    trainer = Trainer(config, out, device=args.device, progress=not args.no_progress)
    R = trainer.resolution_log2
    precision = "float32" if config.amp == "none" else f"{config.amp} autocast"
    print(f"progan_fast demo: {config.total_kimg:g} kimg on {trainer.dataset_path} ({trainer.device}, "
          f"{torch.get_num_threads()} threads, {precision}: {amp_reason}, {trainer.memory_format}), "
          f"run directory {os.path.abspath(out)}", flush=True)
    swd_start = evaluate_generator(trainer.Gs, trainer.dataset, R, 1.0, num=SWD_IMAGES, msssim=False)
    summary = trainer.run()
    if summary["interrupted"]:
        return 130
    fakes = generate_uint8(trainer.Gs, SWD_IMAGES, R, 1.0, seed=0)
    swd_end = dict(evaluate_images(fakes, trainer.dataset, R, seed=0), alpha=1.0)
    distinct = torch.randperm(len(trainer.dataset), generator=torch.Generator().manual_seed(0))[:SWD_IMAGES]
    reals = torch.from_numpy(trainer.dataset.images(R)[distinct.sort().values.numpy()])
    ok, details = gate(swd_start["swd"]["avg"], swd_end["swd"]["avg"], fakes, reals)
    elapsed = time.time() - start
    grid = os.path.join(trainer.run_dir, "fakes-final.png")
    trainer.save_grid(trainer.generate(trainer.grid_latents), grid)
    report = {"swd_start": swd_start, "swd_end": swd_end, "gate": details, "passed": ok,
              "seconds": round(elapsed, 1), "training_seconds": round(summary["total_sec"], 1),
              "training_images_per_s": round(summary["cur_nimg"] / max(summary["total_sec"], 1e-9), 2),
              "kimg": summary["cur_nimg"] / 1000, "precision": precision, "layout": trainer.memory_format,
              "allocator": None if trainer.allocator is None else str(trainer.allocator),
              "threads": torch.get_num_threads(), "config": config.to_dict()}
    atomic_write(os.path.join(trainer.run_dir, "swd.json"), json.dumps(report, indent=2))
    print(f"\nSWD x1e3 (avg over 32/16, {SWD_IMAGES} images): start {swd_start['swd']['avg']:.1f} -> "
          f"end {swd_end['swd']['avg']:.1f} ({'below' if details['swd_ok'] else 'NOT below'} "
          f"{SWD_IMPROVEMENT:g} x the start); MS-SSIM of Gs {swd_end['ms_ssim']:.3f}")
    print(f"diversity: median distance to the nearest other image {details['nn_distance_fakes']:.1f} for Gs, "
          f"{details['nn_distance_reals']:.1f} for distinct reals ({'at least' if details['diversity_ok'] else 'NOT'}"
          f" {DIVERSITY_FRACTION:g} x the reals'); {'PASSED' if ok else 'FAILED'}")
    print(f"time {elapsed / 60:.1f} min ({summary['total_sec'] / 60:.1f} min training, "
          f"{report['training_images_per_s']:.1f} images/s, {precision}, {trainer.memory_format})")
    print(f"final grid   {grid}")
    print(f"reals        {os.path.join(trainer.run_dir, 'reals.png')}")
    print(f"loss plot    {os.path.join(trainer.run_dir, 'losses.png')}")
    print(f"log          {os.path.join(trainer.run_dir, 'log.csv')}  (TensorBoard: {trainer.run_dir}/tensorboard)")
    print(f"checkpoint   {summary['checkpoint']}")
    print(f"metrics      {os.path.join(trainer.run_dir, 'swd.json')}")
    return 0 if ok else 1


if __name__ == "__main__":
    from . import omp
    if omp.wants_short_spin(build_parser().parse_args().device):
        omp.reexec_with_short_spin("progan_fast.demo", sys.argv[1:])
    sys.exit(main())
