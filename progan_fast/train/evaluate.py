"""A trained generator outside the training loop: loading it from a checkpoint, generating uint8 images, and the
paper's metrics (SWD, MS-SSIM) against a dataset. Used by `progan-fast generate|metrics` and the demo."""
import os

import torch

from ..images import to_uint8
from . import checkpoint
from .config import TrainConfig
from .device import resolve_device
from .schedule import TrainingSchedule


def load_generator(path, network="Gs", device="auto"):
    """(generator, res_log2, alpha, checkpoint) from a checkpoint file or run directory: Gs (or G), evaluated at
    the resolution and fade the checkpoint had reached."""
    from ..models import Generator
    if network not in ("Gs", "G"):
        raise ValueError(f"network must be 'Gs' or 'G'; got {network!r}")
    device = resolve_device(device)
    path = checkpoint.resolve_path(path)
    ckpt = checkpoint.load(path)
    cfg = TrainConfig.from_dict(ckpt["config"])
    net = Generator(resolution=2 ** ckpt["resolution_log2"], num_channels=ckpt["num_channels"],
                    latent_size=cfg.latent_size, fmap_base=cfg.fmap_base, fmap_max=cfg.fmap_max,
                    fmap_decay=cfg.fmap_decay, normalize_latents=cfg.normalize_latents)
    try:
        net.load_state_dict(ckpt[network])
    except RuntimeError as exc:
        raise ValueError(f"{path}: its {network} does not match the network its own config describes "
                         f"({str(exc).splitlines()[0]}); the checkpoint is corrupt") from None
    net = net.eval().requires_grad_(False).to(device)
    sched = TrainingSchedule(ckpt["cur_nimg"], **cfg.schedule_kwargs(ckpt["resolution_log2"], ckpt["world_size"]))
    return net, sched.res_log2, sched.alpha, ckpt


@torch.no_grad()
def generate_uint8(net, num, res_log2, alpha, seed=0, batch=64):
    """num images from latents drawn with torch.Generator().manual_seed(seed), as uint8 NCHW on the CPU."""
    device = next(net.parameters()).device
    latents = torch.randn(num, net.latent_size, generator=torch.Generator().manual_seed(seed))
    return torch.cat([to_uint8(net(chunk.to(device), res_log2, alpha)).cpu() for chunk in latents.split(batch)])


def evaluate_generator(net, dataset, res_log2, alpha, num=2048, seed=0, msssim=True):
    """SWD (x1e3, per level and average) between num random reals and num generated images at res_log2, and the
    MS-SSIM of the generated images. Below 16x16 the SWD pyramid has one level (with 3x3 patches at 4x4) and MS-SSIM,
    which needs five scales, is None."""
    fakes = generate_uint8(net, num, res_log2, alpha, seed)
    return dict(evaluate_images(fakes, dataset, res_log2, seed, msssim), alpha=alpha)


def evaluate_images(fakes, dataset, res_log2, seed=0, msssim=True):
    """evaluate_generator's metrics for a given uint8 NCHW set of images (as many reals are drawn)."""
    from ..metrics import ms_ssim, sliced_wasserstein
    num = len(fakes)
    images = dataset.images(res_log2)
    index = torch.randint(len(images), (num,), generator=torch.Generator().manual_seed(seed + 1))
    reals = torch.from_numpy(images[index.sort().values.numpy()])
    size = 2 ** res_log2
    swd_args = {} if size >= 16 else {"min_resolution": size, "patch_size": 7 if size > 7 else 3}
    result = {"resolution": size, "num": num,
              "swd": {str(k): v for k, v in sliced_wasserstein(reals, fakes, seed=seed, **swd_args).items()}}
    if msssim:
        result["ms_ssim"] = ms_ssim(fakes[:num - num % 2]) if size >= 16 and num >= 2 else None
    return result


def evaluate_checkpoint(path, data=None, num=2048, seed=0, device="auto", network="Gs"):
    from .data import MultiResDataset
    net, res_log2, alpha, ckpt = load_generator(path, network, device)
    data = data or ckpt["data"]
    if not os.path.isdir(data):
        raise FileNotFoundError(f"dataset directory not found: {data}")
    dataset = MultiResDataset(data)
    if dataset.resolution_log2 < res_log2:
        raise ValueError(f"dataset {data} goes up to {dataset.resolution}x{dataset.resolution}; the checkpoint "
                         f"generates {2 ** res_log2}x{2 ** res_log2}")
    result = {"checkpoint": checkpoint.resolve_path(path), "kimg": ckpt["cur_nimg"] / 1000, "network": network}
    result.update(evaluate_generator(net, dataset, res_log2, alpha, num, seed))
    return result
