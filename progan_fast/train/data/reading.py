"""Reading a dataset directory (memory-mapped, validated against its manifest) and drawing minibatches of reals."""
import json
import numbers
import os

import numpy as np
import torch

from .layout import FORMAT, FORMAT_VERSION, MANIFEST, error_text


class MultiResDataset:
    """A dataset directory written by create_dataset / default_dataset, read through memory maps."""

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path; got {type(path).__name__}")
        self.path = os.path.abspath(os.fspath(path))
        manifest_path = os.path.join(self.path, MANIFEST)
        if not os.path.isfile(manifest_path):
            what = "does not exist" if not os.path.exists(self.path) else f"has no {MANIFEST}"
            raise FileNotFoundError(f"dataset {self.path!r} {what}; create one with create_dataset() "
                                    f"(progan-fast dataset create) or use the default dataset")
        try:
            with open(manifest_path) as f:
                manifest = json.load(f)
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
            if manifest.get("version") != FORMAT_VERSION:
                raise ValueError(f"version {manifest.get('version')!r} is not supported (this build reads "
                                 f"version {FORMAT_VERSION}); recreate the dataset")
            self.resolution_log2 = int(manifest["resolution_log2"])
            self.num_images = int(manifest["num_images"])
            self.num_channels = int(manifest["channels"])
            levels = {int(k): v for k, v in manifest["levels"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"dataset manifest {manifest_path!r} is corrupt: {error_text(exc)}") from exc
        if sorted(levels) != list(range(2, self.resolution_log2 + 1)):
            raise ValueError(f"dataset manifest {manifest_path!r} is corrupt: levels {sorted(levels)} do not cover "
                             f"2..{self.resolution_log2}")
        self.manifest = manifest
        self._levels = {}
        for k, name in levels.items():
            file = os.path.join(self.path, os.path.basename(name))
            expected = (self.num_images, self.num_channels, 2 ** k, 2 ** k)
            try:
                arr = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise ValueError(f"dataset level file {file!r} is missing or corrupt: {error_text(exc)}") from exc
            if arr.dtype != np.uint8 or arr.shape != expected:
                raise ValueError(f"dataset level file {file!r} holds {arr.dtype} {arr.shape}; expected uint8 "
                                 f"{expected}")
            self._levels[k] = arr

    @property
    def resolution(self):
        return 2 ** self.resolution_log2

    def __len__(self):
        return self.num_images

    def _check_level(self, res_log2):
        if isinstance(res_log2, bool) or not isinstance(res_log2, numbers.Integral):
            raise TypeError(f"res_log2 must be an int; got {type(res_log2).__name__}")
        if not 2 <= res_log2 <= self.resolution_log2:
            raise ValueError(f"res_log2 must be in [2, {self.resolution_log2}] for this dataset (4x4 to "
                             f"{self.resolution}x{self.resolution}); got {res_log2}")
        return int(res_log2)

    def images(self, res_log2):
        """uint8 memmap [num_images, num_channels, 2^res_log2, 2^res_log2] (read-only)."""
        return self._levels[self._check_level(res_log2)]

    def __repr__(self):
        return (f"MultiResDataset({self.path!r}: {self.num_images} images, {self.num_channels} channels, "
                f"4x4..{self.resolution}x{self.resolution})")


# Official process_reals maps [0, 255] to [-1, 1] with adjust_dynamic_range: x * (2/255) - 1 in float32.
_SCALE = np.float32(2.0 / 255.0)


def sample_batch(dataset, res_log2, batch_size, generator, mirror=False, device="cpu"):
    """A minibatch of reals: float32 [batch_size, C, 2^res_log2, 2^res_log2] in [-1, 1] on `device`.

    Indices are drawn uniformly with replacement, then (with mirror=True) one horizontal-flip coin per image with
    p = 0.5 (the official mirror augment), both from `generator` only and always in that order, so restoring a
    saved generator state reproduces the exact same batches."""
    if not isinstance(dataset, MultiResDataset):
        raise TypeError(f"dataset must be a MultiResDataset; got {type(dataset).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (its state is what a checkpoint saves); got "
                         f"one on {generator.device}")
    data = dataset.images(res_log2)
    batch_size = int(batch_size)
    idx = torch.randint(dataset.num_images, (batch_size,), generator=generator).numpy()
    batch = data[idx]  # fancy indexing copies out of the memmap
    if mirror:
        flips = (torch.rand(batch_size, generator=generator) < 0.5).numpy()
        batch[flips] = batch[flips][..., ::-1]
    device = torch.device(device)
    if device.type == "cpu":
        # numpy, single-threaded: torch's intra-op threads cost more than they save on tensors this small.
        out = np.multiply(batch, _SCALE, dtype=np.float32)
        out -= np.float32(1.0)
        return torch.from_numpy(out)
    # Move uint8 (4x fewer bytes than float32) and convert on the device.
    batch = torch.from_numpy(batch)
    if device.type == "cuda":
        batch = batch.pin_memory()
    batch = batch.to(device, non_blocking=True)
    return batch.to(torch.float32).mul_(float(_SCALE)).sub_(1.0)
