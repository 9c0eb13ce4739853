"""Checkpoints: atomic writes, weights_only-loadable contents, and the RNG states a bit-exact resume needs.

A checkpoint is a dict of tensors and plain Python values only (state dicts, optimizer state dicts, RNG states as
uint8 tensors or tuples of ints, the config as a dict), so `torch.load(path, weights_only=True)` opens it without
unpickling arbitrary objects. A file that does not load that way, or lacks a key, is refused with a ValueError
that names the file and says what to do.
"""
import os
import random

import torch

from ..fileio import atomic_write

FORMAT_VERSION = 1
LATEST = "checkpoint-latest.pt"
REQUIRED_KEYS = ("format", "version", "config", "resolution_log2", "num_channels", "data", "world_size", "G", "D",
                 "Gs", "G_opt", "D_opt", "G_scaler", "D_scaler", "rng", "cur_nimg", "prev_lod", "tick",
                 "tick_start_nimg", "nonfinite_skips", "fp16_overflows", "total_sec")


def save(obj, path):
    """torch.save to a temporary file in the destination directory, fsync, then os.replace (fileio.atomic_write):
    a reader (or a crash) sees either the previous file or the complete new one, never a torn write."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: torch.save(obj, f), durable=True)


def _short_reason(exc):
    """One line out of torch.load's multi-paragraph errors: for a weights_only refusal the paragraph that names
    what was refused, otherwise the first sentence."""
    text = str(exc).strip()
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    if text.startswith("Weights only load failed") and len(paragraphs) > 1:
        return "weights_only refused it: " + " ".join(paragraphs[1].split())
    first = text.splitlines()[0].split(". ")[0][:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load(path, map_location="cpu"):
    """The checkpoint dict at `path`, loaded with weights_only=True and checked for every key training needs."""
    from .config import TrainConfig
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    hint = "use an earlier network-snapshot-*.pt of the same run instead"
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch.load raises anything from EOFError to KeyError on bad bytes
        raise ValueError(f"{path} cannot be read as a checkpoint: it is truncated or corrupt, or holds objects "
                         f"other than tensors and plain values, which weights_only loading refuses "
                         f"({_short_reason(exc)}); {hint}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "progan_fast":
        raise ValueError(f"{path} is not a progan_fast checkpoint")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"{path} is an incomplete progan_fast checkpoint (missing {', '.join(missing)}); {hint}")
    if not isinstance(ckpt["version"], int) or ckpt["version"] > FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {ckpt['version']!r}; this progan_fast reads up to "
                         f"{FORMAT_VERSION}")
    try:
        TrainConfig.from_dict(ckpt["config"]).validate()
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} holds an invalid training config ({exc}); {hint}") from None
    return ckpt


def capture_rng(data_generator, latent_generator):
    """Every random state that training consumes, as tensors and plain values."""
    version, state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(state), gauss_next],
        "data": data_generator.get_state(),
        "latent": latent_generator.get_state(),
    }


def restore_rng(rng, data_generator, latent_generator):
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    version, state, gauss_next = rng["python"]
    random.setstate((version, tuple(state), gauss_next))
    data_generator.set_state(rng["data"])
    latent_generator.set_state(rng["latent"])


def resolve_path(path):
    """A checkpoint file, or a run directory (its latest checkpoint)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = os.path.join(path, LATEST)
        if not os.path.isfile(latest):
            raise FileNotFoundError(f"{path} is a directory without a {LATEST}; pass a checkpoint file")
        return latest
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def snapshot_name(cur_nimg):
    return f"network-snapshot-{cur_nimg / 1000:08.3f}kimg.pt"
