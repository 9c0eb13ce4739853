"""Writes a dataset directory atomically: levels stream into memory maps inside a hidden temporary directory next
to the destination, which is renamed into place only when complete.

The temporary directory (`.<name>.partial-<random>`) is flocked by its writer for as long as the writer lives; a
writer killed with SIGKILL leaves it behind unlocked, and the next writer of the same destination deletes it.
"""
import json
import os
import shutil

import numpy as np

from ...fileio import atomic_write, file_in_the_way, make_locked_temp_dir, remove_stale_temp_dirs
from .layout import MANIFEST, level_file


def box_down(img):
    """One official 2x2 box level on a float32 [..., H, W] array (kept unrounded for the next level)."""
    total = img[..., 0::2, 0::2] + img[..., 0::2, 1::2] + img[..., 1::2, 0::2] + img[..., 1::2, 1::2]
    return total * np.float32(0.25)


def quantize(img):
    return np.rint(img).clip(0, 255).astype(np.uint8)


def partial_prefix(out_dir):
    return f".{os.path.basename(os.path.abspath(out_dir))}.partial-"


def check_destination(out_dir):
    """A dataset may be created at `out_dir` only where nothing is (or an empty directory)."""
    if os.path.islink(out_dir) or (os.path.exists(out_dir) and (not os.path.isdir(out_dir)
                                                                or os.listdir(out_dir))):
        what = "is a symbolic link" if os.path.islink(out_dir) else (
            "is a file" if not os.path.isdir(out_dir) else "already exists and is not empty")
        raise FileExistsError(f"out_dir {out_dir!r} {what}; choose a new path")


class LevelWriter:
    """Creates the temporary directory at once (so an unwritable destination fails before any work), preallocates
    the per-level memory maps in allocate(), and publishes everything with one rename in commit(); a crash or an
    exception leaves no dataset behind."""

    def __init__(self, out_dir):
        self.out_dir = os.path.abspath(out_dir)
        check_destination(self.out_dir)
        parent = os.path.dirname(self.out_dir)
        blocked = file_in_the_way(parent)
        if blocked is not None:
            raise NotADirectoryError(f"out_dir {out_dir!r} cannot be created: {blocked} is a file")
        os.makedirs(parent, exist_ok=True)
        self.removed_stale = remove_stale_temp_dirs(parent, partial_prefix(self.out_dir))
        try:
            self.tmp, self._lock_fd = make_locked_temp_dir(parent, partial_prefix(self.out_dir))
        except PermissionError:
            raise PermissionError(f"out_dir {out_dir!r} cannot be created: {parent} is not writable; choose a "
                                  "writable place") from None
        self.levels = {}
        self.count = 0
        self.capacity = 0
        self.resolution_log2 = None

    def allocate(self, num_images, resolution_log2, channels=3):
        self.resolution_log2 = resolution_log2
        self.capacity = num_images
        try:
            for k in range(2, resolution_log2 + 1):
                self.levels[k] = np.lib.format.open_memmap(
                    os.path.join(self.tmp, level_file(k)), mode="w+", dtype=np.uint8,
                    shape=(num_images, channels, 2 ** k, 2 ** k))
        except BaseException:
            self.abort()
            raise

    def add(self, images):
        """images: uint8 [n, C, R, R] (or [C, R, R]) at the top resolution."""
        images = images[None] if images.ndim == 3 else images
        n = images.shape[0]
        lo, hi = self.count, self.count + n
        img = images
        for k in range(self.resolution_log2, 1, -1):
            if k == self.resolution_log2:
                self.levels[k][lo:hi] = images
                img = images.astype(np.float32)
            else:
                img = box_down(img)
                self.levels[k][lo:hi] = quantize(img)
        self.count = hi

    def commit(self, manifest):
        """Flush, shrink to the images actually written (some may have failed to decode), write the manifest last
        and publish the directory with one rename."""
        try:
            for arr in self.levels.values():
                arr.flush()
            self.levels = {}
            if self.count != self.capacity:
                for k in range(2, self.resolution_log2 + 1):
                    self._shrink(k)
            manifest = dict(manifest, num_images=self.count)
            atomic_write(os.path.join(self.tmp, MANIFEST), json.dumps(manifest, indent=1), durable=True)
            if os.path.isdir(self.out_dir) and not os.path.islink(self.out_dir):
                os.rmdir(self.out_dir)  # empty (checked in __init__); not every OS renames onto a directory
            os.rename(self.tmp, self.out_dir)
        except BaseException:
            self.abort()
            raise
        self._unlock()

    def _shrink(self, k):
        path = os.path.join(self.tmp, level_file(k))
        src = np.load(path, mmap_mode="r")
        small_path = path + ".small"
        dst = np.lib.format.open_memmap(small_path, mode="w+", dtype=np.uint8, shape=(self.count,) + src.shape[1:])
        step = max(1, (64 << 20) // max(1, src[0].nbytes))
        for i in range(0, self.count, step):
            dst[i:i + step] = src[i:min(i + step, self.count)]
        dst.flush()
        del src, dst
        os.replace(small_path, path)

    def abort(self):
        self.levels = {}
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock()

    def _unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
