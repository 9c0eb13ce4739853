"""Checkpoints: atomic writes, weights_only-loadable contents, and the RNG states a bit-exact resume needs.

A checkpoint is a dict of tensors and plain Python values only (state dicts, optimizer state dicts, RNG states as
uint8 tensors or tuples of ints, the config as a dict), so `torch.load(path, weights_only=True)` opens it without
unpickling arbitrary objects.
"""
import os
import random
import tempfile

import torch

FORMAT_VERSION = 1
LATEST = "checkpoint-latest.pt"


def save(obj, path):
    """torch.save to a temporary file in the destination directory, fsync, then os.replace: a reader (or a crash)
    sees either the previous file or the complete new one, never a torn write."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)


def load(path, map_location="cpu"):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "progan_fast" or "config" not in ckpt:
        raise ValueError(f"{path} is not a progan_fast checkpoint")
    if ckpt.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {ckpt['version']}; this progan_fast reads up to "
                         f"{FORMAT_VERSION}")
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
