"""`progan-fast` command line: train, generate, dataset create, metrics, env.

    progan-fast train --data DIR --out runs/x --kimg 12000          (torchrun --nproc_per_node=N -m progan_fast.train)
    progan-fast train --resume runs/x                               (continues bit-exactly; given flags override)
    progan-fast generate --ckpt runs/x --num 64 --out grid.png
    progan-fast dataset create SRC_IMAGES OUT_DIR [--resolution 256]
    progan-fast metrics --ckpt runs/x [--data DIR] [--num 2048]
    progan-fast env

Multi-process training: `torchrun --nproc_per_node=N -m progan_fast.train ...` (NCCL, one GPU per process; gloo on
CPU). The schedule's minibatch is global and split over the processes; each draws its own data and latents; rank 0
alone writes the run directory. Ctrl-C (SIGINT) or SIGTERM writes checkpoint-latest.pt at the end of the current
iteration and exits with status 130.

A mistake in the command (a bad value, a missing or unreadable file, a flag that conflicts with the checkpoint
being resumed) is reported as one line, `progan-fast <command>: error: <what and how to fix it>`, with exit status
2, before anything is written.
"""
import argparse
import json
import math
import os
import sys

from .backends import BACKENDS, BackendUnavailable
from .fileio import DirectoryInUse, file_in_the_way
from .ops.winograd import ALGORITHMS as CONV_ALGORITHMS
from .train.config import MEMORY_FORMATS

# OSError subclasses that mean "this path is not what the command needs"; other OSErrors (a full disk, an I/O
# error) keep their traceback.
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
                PermissionError, BackendUnavailable, DirectoryInUse)
_MAX_SEED = 2 ** 63 - 1


def _int_arg(text, accepts, expected):
    """argparse type: an integer that `accepts` takes; `expected` names which in the error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accepts(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def _pow2(text):
    return _int_arg(text, lambda v: v >= 4 and not v & (v - 1), "a power of two >= 4")


def _positive_int(text):
    return _int_arg(text, lambda v: v >= 1, "a positive integer")


def _seed(text):
    return _int_arg(text, lambda v: 0 <= v <= _MAX_SEED, "an integer in [0, 2**63 - 1]")


def _nonneg_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _positive_float(text):
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _res_dict(value_type):
    def parse(text):
        out = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, sep, value = item.partition(":")
            if not sep:
                raise argparse.ArgumentTypeError(f"expected RES:VALUE pairs like 4:128,8:64; got {item!r}")
            out[_pow2(key)] = value_type(value)
        return out
    return parse


def _add_train_args(p):
    # Every default is None: only the flags given on the command line override the config (or, with --resume,
    # the checkpoint's config).
    a = p.add_argument
    a("--data", help="dataset directory (from `progan-fast dataset create`); default: the embedded 32x32 dataset")
    a("--out", help="run directory (default: runs/<dataset>-<resolution>; with --resume: the checkpoint's)")
    a("--resume", metavar="PATH", help="checkpoint file or run directory to continue from")
    a("--resolution", type=_pow2, help="final resolution (default: the dataset's)")
    a("--start-resolution", type=_pow2, help="first resolution (default 4)")
    a("--kimg", type=_positive_float, help="total thousands of real images to show (default 12000)")
    a("--lod-training-kimg", type=_nonneg_float, help="kimg per resolution before the next fades in (600)")
    a("--lod-transition-kimg", type=_nonneg_float, help="kimg of each fade-in (600)")
    a("--minibatch", type=_positive_int, help="one minibatch size for every resolution (default: TF's "
      "4:128,8:128,16:128,32:64,64:32,128:16,256:8,512:4, else 4)")
    a("--minibatch-dict", type=_res_dict(int), metavar="RES:N,...", help="per-resolution minibatch sizes")
    a("--minibatch-repeats", type=_positive_int, help="minibatches per schedule evaluation (4)")
    a("--fmap-base", type=_positive_int, help="feature maps: min(fmap_base / 2^stage, fmap_max) (8192)")
    a("--fmap-max", type=_positive_int, help="(512)")
    a("--latent-size", type=_positive_int, help="(default min(fmap_base, fmap_max))")
    a("--lr", type=_positive_float, help="Adam learning rate of G and D (0.001)")
    a("--lr-dict", type=_res_dict(float), metavar="RES:LR,...", help="per-resolution learning rates (G and D)")
    a("--gp-interval", type=_positive_int, metavar="K", help="lazy regularization: the WGAN-GP gradient penalty on "
      "every K-th D step only, weighted x K (StyleGAN2); the other D steps skip D on the mixed images and the double "
      "backward (1: every step, as the paper)")
    a("--ema-beta", type=float, help="Gs smoothing per iteration (0.999)")
    a("--no-adam-reset", action="store_const", const=True, help="keep Adam state across lod changes")
    a("--mirror", action="store_const", const=True, help="random horizontal flips of the reals")
    a("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (none)")
    a("--backend", choices=("auto",) + BACKENDS, help="op backend (auto)")
    a("--conv-algorithm", choices=CONV_ALGORITHMS, help="3x3 convs on the CPU: direct (torch's) or winograd "
      "(F(4x4, 3x3): faster, about 10x a direct conv's float32 rounding; see README) (direct)")
    a("--memory-format", choices=MEMORY_FORMATS, help="activations' layout; auto: channels_last with Winograd or "
      "with bf16 on a CPU with AMX, where it was measured faster, else nchw (auto)")
    a("--nonfinite", choices=("skip", "stop"), help="on a non-finite loss: skip the step and count it, or stop")
    a("--seed", type=_seed, help="random seed (1000)")
    a("--device", help="auto, cpu, cuda or cuda:N (auto)")
    a("--tick-kimg", type=_positive_float, help="one tick length for every resolution (default: TF's 160..10)")
    a("--image-snapshot-ticks", type=_positive_int, help="sample grid every N ticks (1)")
    a("--network-snapshot-ticks", type=_positive_int, help="numbered checkpoint every N ticks (10)")
    a("--grid-size", type=_positive_int, help="sample grid of N x N images (8)")
    a("--no-progress", action="store_true", help="no progress bar")


_FLAG_TO_CONFIG = {"data": "data", "resolution": "resolution", "start_resolution": "start_resolution",
                   "kimg": "total_kimg", "lod_training_kimg": "lod_training_kimg",
                   "lod_transition_kimg": "lod_transition_kimg", "minibatch_repeats": "minibatch_repeats",
                   "fmap_base": "fmap_base", "fmap_max": "fmap_max", "latent_size": "latent_size",
                   "ema_beta": "ema_beta", "gp_interval": "gp_interval", "mirror": "mirror", "amp": "amp",
                   "backend": "backend", "conv_algorithm": "conv_algorithm", "memory_format": "memory_format",
                   "nonfinite": "nonfinite", "seed": "seed", "image_snapshot_ticks": "image_snapshot_ticks",
                   "network_snapshot_ticks": "network_snapshot_ticks", "grid_size": "grid_size"}


_CONFIG_TO_FLAG = {field: "--" + flag.replace("_", "-") for flag, field in _FLAG_TO_CONFIG.items()}


def config_overrides(args):
    """The TrainConfig fields the command line sets explicitly."""
    out = {field: getattr(args, flag) for flag, field in _FLAG_TO_CONFIG.items() if getattr(args, flag) is not None}
    if args.data is not None:
        out["data"] = os.path.abspath(args.data)
    if args.minibatch is not None:
        out["minibatch_base"], out["minibatch_dict"] = args.minibatch, {}
    if args.minibatch_dict is not None:
        out["minibatch_dict"] = args.minibatch_dict
    if args.lr is not None:
        out["G_lrate"] = out["D_lrate"] = args.lr
    if args.lr_dict is not None:
        out["G_lrate_dict"] = dict(args.lr_dict)
        out["D_lrate_dict"] = dict(args.lr_dict)
    if args.no_adam_reset:
        out["reset_opt_for_new_lod"] = False
    if args.tick_kimg is not None:
        out["tick_kimg_base"], out["tick_kimg_dict"] = args.tick_kimg, {}
    return out


def _init_distributed(device):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: NCCL with one GPU per process, gloo on CPU."""
    import torch
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device not in ("cpu",) and torch.cuda.is_available() and not str(device).startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return (device if use_cuda else "cpu"), True


def cmd_train(args):
    from .train import checkpoint
    from .train.config import TrainConfig
    from .train.device import resolve_device
    from .train.loop import NonFiniteLossError, Trainer

    overrides = config_overrides(args)
    resolve_device(args.device, "--device")
    resume = None
    if args.resume:
        ckpt_path = checkpoint.resolve_path(args.resume)
        resume = checkpoint.load(ckpt_path)
        stored = TrainConfig.from_dict(resume["config"])
        config = stored.replace(**overrides)
        for name, mine, theirs in config.architecture_conflicts(stored):
            flag = _CONFIG_TO_FLAG.get(name, name)
            raise ValueError(f"{flag} {mine} conflicts with the checkpoint, which was trained with {name} {theirs}: "
                             f"the network shapes are fixed when a run starts; drop {flag} to continue this run, "
                             "or start a new one (without --resume)")
        out = args.out or os.path.dirname(os.path.abspath(ckpt_path))
    else:
        config = TrainConfig(**overrides)
        if args.out:
            out = args.out
        else:
            name = os.path.basename(os.path.normpath(config.data)) if config.data else "default"
            out = os.path.join("runs", f"{name}-{config.resolution or 'auto'}")
        if os.path.exists(os.path.join(out, checkpoint.LATEST)):
            raise ValueError(f"{out} already holds a run ({checkpoint.LATEST}); continue it with --resume {out} "
                             "or pick another --out")
    if config.data is not None and not os.path.isdir(config.data):
        raise FileNotFoundError(f"dataset directory not found: {config.data}")
    config.validate()
    device, distributed = _init_distributed(args.device or "auto")
    try:
        # Validates the rest (dataset, networks, minibatch, the run directory) before writing anything.
        trainer = Trainer(config, out, device=device, resume=resume, progress=not args.no_progress)
        trainer.log(f"run directory: {os.path.abspath(out)}  (device {trainer.device}, "
                    f"{trainer.world_size} process(es), resolution {2 ** trainer.resolution_log2})")
        try:
            summary = trainer.run()
        except NonFiniteLossError as e:
            print(f"progan-fast train: error: {e}", file=sys.stderr)
            return 1
    finally:
        if distributed:
            import torch.distributed as dist
            dist.destroy_process_group()
    if summary["interrupted"]:
        return 130
    trainer.log(f"done: {summary['cur_nimg'] / 1000:.3f} kimg in {summary['total_sec']:.1f} s; "
                f"checkpoint {summary['checkpoint']}; {summary['nonfinite_skips']} non-finite step(s) skipped")
    return 0


def _check_output_file(path, flag, suffix=None):
    """`path` can be written as a file (its missing directories created): it is not a directory, no file stands
    where one of its directories should be, and the suffix matches."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{flag} {path} is a directory; give a file name")
    blocked = file_in_the_way(os.path.dirname(os.path.abspath(path)))
    if blocked is not None:
        raise NotADirectoryError(f"{flag} {path} cannot be created: {blocked} is a file, not a directory")
    if suffix and not path.lower().endswith(suffix):
        raise ValueError(f"{flag} must name a {suffix} file; got {path}")


def cmd_generate(args):
    from .images import save_image, save_image_grid
    from .train.device import resolve_device
    from .train.evaluate import generate_uint8, load_generator

    if args.individual:
        blocked = file_in_the_way(args.out)
        if blocked is not None:
            raise NotADirectoryError(f"--out {args.out}: {blocked} is a file; with --individual, --out names the "
                                     "directory to write one PNG per image into (created if missing)")
    elif os.path.isdir(args.out):
        raise IsADirectoryError(f"--out {args.out} is a directory; give the grid's file name (e.g. "
                                f"{os.path.join(args.out, 'grid.png')}), or pass --individual to write one PNG per "
                                "image into it")
    else:
        _check_output_file(args.out, "--out", ".png")
    device = resolve_device(args.device, "--device")
    net, res_log2, alpha, _ = load_generator(args.ckpt, network=args.network, device=device)
    images = generate_uint8(net, args.num, res_log2, alpha, seed=args.seed)
    size = f"{2 ** res_log2}x{2 ** res_log2}"
    if args.individual:
        os.makedirs(args.out, exist_ok=True)
        for i, image in enumerate(images):
            save_image(image, os.path.join(args.out, f"seed{args.seed:04d}-{i:06d}.png"))
        print(f"wrote {len(images)} images ({size}) to {args.out}")
    else:
        save_image_grid(images, args.out)
        print(f"wrote a grid of {len(images)} images ({size}) to {args.out}")
    return 0


def cmd_dataset_create(args):
    from .train.data import create_dataset
    if not os.path.isdir(args.src):
        raise FileNotFoundError(f"source image directory not found: {args.src}")
    report = create_dataset(args.src, args.out, resolution=args.resolution, progress=not args.no_progress,
                            follow_links=args.follow_links)
    print(report.summary())
    return 0


def cmd_metrics(args):
    from .fileio import atomic_write
    from .train.device import resolve_device
    from .train.evaluate import evaluate_checkpoint
    if args.json:
        _check_output_file(args.json, "--json")
    if args.data is not None and not os.path.isdir(args.data):
        raise FileNotFoundError(f"dataset directory not found: {args.data}")
    result = evaluate_checkpoint(args.ckpt, data=args.data, num=args.num, seed=args.seed,
                                 device=resolve_device(args.device, "--device"), network=args.network)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write(args.json, text + "\n")
    return 0


def cmd_env(args):
    from . import env
    env.main()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="progan-fast", description="Progressive GAN training on fused kernels.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train (or resume) a progressive GAN")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="images from a checkpoint's Gs (or G)")
    p.add_argument("--ckpt", required=True, help="checkpoint file or run directory")
    p.add_argument("--out", default="generated.png", help="grid PNG path, or a directory with --individual")
    p.add_argument("--num", type=_positive_int, default=64)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--individual", action="store_true", help="one PNG per image instead of a grid")
    p.add_argument("--network", choices=("Gs", "G"), default="Gs", help="Gs: the EMA generator (default)")
    p.add_argument("--device")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("dataset", help="dataset tools")
    dsub = p.add_subparsers(dest="dataset_command", required=True, metavar="SUBCOMMAND")
    c = dsub.add_parser("create", help="convert a folder of images to a multi-resolution dataset")
    c.add_argument("src", help="directory of images (searched recursively)")
    c.add_argument("out", help="output dataset directory")
    c.add_argument("--resolution", type=_pow2, help="crop/resize to this resolution (default: from the images)")
    c.add_argument("--follow-links", action="store_true",
                   help="also read file links that point outside SRC (those inside it are always read; links to "
                   "directories never are)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_dataset_create)

    p = sub.add_parser("metrics", help="SWD and MS-SSIM of a checkpoint's generator")
    p.add_argument("--ckpt", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", help="dataset directory (default: the one the checkpoint trained on)")
    p.add_argument("--num", type=_positive_int, default=2048, help="images per side (default 2048)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--network", choices=("Gs", "G"), default="Gs")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.add_argument("--device")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("env", help="versions, backends and which backend each op uses")
    p.set_defaults(func=cmd_env)
    return parser


def _error_text(exc):
    if isinstance(exc, OSError) and exc.strerror and exc.filename:  # raised by the OS: errno text and the path
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def main(argv=None):
    """Runs one command in this process; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command + (f" {args.dataset_command}" if args.command == "dataset" else "")
    try:
        return args.func(args)
    except _USER_ERRORS as e:
        print(f"progan-fast {command}: error: {_error_text(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"progan-fast {command}: interrupted", file=sys.stderr)
        return 130


def entry(argv=None):
    """The `progan-fast` program (and `python -m progan_fast.train`): main(), after re-executing CPU training with
    a short OpenMP spin (progan_fast/omp.py)."""
    from . import omp
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        args = build_parser().parse_args(argv)
        if omp.wants_short_spin(args.device):
            omp.reexec_with_short_spin("progan_fast.cli", argv)
    return main(argv)


if __name__ == "__main__":
    sys.exit(entry())
