"""Training data: a multi-resolution image cache (one uint8 NCHW .npy per level, memory-mapped), its creation from
a folder of images, a deterministic minibatch sampler, the embedded procedural default dataset, and image grids.

Layout of a dataset directory (FORMAT_VERSION 1):
  manifest.json   {"format", "version", "resolution", "resolution_log2", "num_images", "channels", "levels",
                   "source", "skipped"}
  r02.npy ... rNN.npy   level 2^k as uint8 [num_images, channels, 2^k, 2^k] (NCHW), C-contiguous.
Levels below the top are 2x2 box-downsampled like the official dataset tool (TFRecordExporter.add_image): the
mean is taken over the float32 image of the level above *before* its rounding, then rint (half to even) and clip.
"""
import json
import math
import numbers
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

FORMAT = "progan_fast-multires"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MIN_RESOLUTION = 4
# Shapes dataset: bump when its rendering changes so that a cached copy of an older one is never reused.
SHAPES_VERSION = 2
SHAPES_SEED = 20180213
SHAPES_NUM_IMAGES = 4096


def _level_file(res_log2):
    return f"r{res_log2:02d}.npy"


@dataclass
class DatasetReport:
    """What create_dataset did. `skipped` lists (path, reason) for every file that is not in the dataset."""
    path: str
    resolution: int
    num_images: int
    skipped: list = field(default_factory=list)
    upscaled: int = 0

    def summary(self):
        text = f"{self.num_images} images at {self.resolution}x{self.resolution} in {self.path}"
        if self.upscaled:
            text += f"; {self.upscaled} smaller than that were upscaled"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} file(s)"
        return text


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _box_down(img):
    """One official 2x2 box level on a float32 [..., H, W] array (kept unrounded for the next level)."""
    total = img[..., 0::2, 0::2] + img[..., 0::2, 1::2] + img[..., 1::2, 0::2] + img[..., 1::2, 1::2]
    return total * np.float32(0.25)


def _quantize(img):
    return np.rint(img).clip(0, 255).astype(np.uint8)


class _LevelWriter:
    """Streams images into preallocated per-level memmaps inside a private temporary directory next to `out_dir`,
    and renames that directory to `out_dir` only in commit(): a crash or an exception leaves no dataset behind."""

    def __init__(self, out_dir, num_images, resolution_log2, channels=3):
        self.out_dir = os.path.abspath(out_dir)
        parent = os.path.dirname(self.out_dir)
        os.makedirs(parent, exist_ok=True)
        if os.path.exists(self.out_dir) and (not os.path.isdir(self.out_dir) or os.listdir(self.out_dir)):
            raise FileExistsError(f"out_dir {self.out_dir!r} already exists and is not empty; choose a new path")
        self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out_dir)}.partial-", dir=parent)
        self.resolution_log2 = resolution_log2
        self.capacity = num_images
        self.count = 0
        self.levels = {}
        try:
            for k in range(2, resolution_log2 + 1):
                self.levels[k] = np.lib.format.open_memmap(
                    os.path.join(self.tmp, _level_file(k)), mode="w+", dtype=np.uint8,
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
                img = _box_down(img)
                self.levels[k][lo:hi] = _quantize(img)
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
            manifest_path = os.path.join(self.tmp, MANIFEST)
            with open(manifest_path, "w") as f:
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            if os.path.isdir(self.out_dir):
                os.rmdir(self.out_dir)  # empty (checked in __init__); not every OS renames onto a directory
            os.rename(self.tmp, self.out_dir)
        except BaseException:
            self.abort()
            raise

    def _shrink(self, k):
        path = os.path.join(self.tmp, _level_file(k))
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


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="img", dynamic_ncols=True)


def _check_resolution(resolution, name="resolution"):
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral):
        raise TypeError(f"{name} must be an int power of two; got {type(resolution).__name__}")
    resolution = int(resolution)
    if resolution < MIN_RESOLUTION or resolution & (resolution - 1):
        raise ValueError(f"{name} must be a power of two >= {MIN_RESOLUTION}; got {resolution}")
    return resolution


def _list_files(src_dir):
    files = []
    for root, dirs, names in os.walk(src_dir):
        dirs.sort()
        for name in sorted(names):
            files.append(os.path.join(root, name))
    return files


def _open_image(path):
    """PIL image in RGB, EXIF orientation applied (phone photos are otherwise stored sideways)."""
    import PIL.Image
    import PIL.ImageOps
    img = PIL.Image.open(path)
    img = PIL.ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL's 16/32-bit -> RGB conversion saturates instead of scaling; map the full range to 8 bits first.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = PIL.Image.fromarray(np.rint(arr * (255.0 / peak)).clip(0, 255).astype(np.uint8), "L")
    if img.mode != "RGB":
        # RGBA/LA/PA: the alpha channel is dropped (not composited); L and 1 are tiled to three channels.
        img = img.convert("RGBA").convert("RGB") if img.mode == "P" else img.convert("RGB")
    return img


def _scan(path):
    """Header-only check: returns (width, height) or raises."""
    import PIL.Image
    with PIL.Image.open(path) as img:
        img.verify()
    with PIL.Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees once exif_transpose is applied
        w, h = h, w
    if w < 1 or h < 1:
        raise ValueError(f"empty image ({w}x{h})")
    return w, h


def _load_square(path, resolution):
    """Center square crop, Lanczos resize to `resolution`: uint8 [3, R, R] and whether it was upscaled."""
    import PIL.Image
    img = _open_image(path)
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    # Crop first: resize(box=...) would let the filter reach pixels outside the square.
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), resample=PIL.Image.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.shape != (resolution, resolution, 3):
        raise ValueError(f"decoded to an unexpected shape {arr.shape}")
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), side < resolution


def create_dataset(src_dir, out_dir, resolution=None, progress=True):
    """Turns a folder of images (searched recursively; png, jpg, jpeg, bmp, webp) into a multi-resolution dataset.

    Every image becomes RGB (grayscale tiled to three channels, alpha dropped), is center-cropped to a square and
    Lanczos-resized to `resolution` (default: the largest power of two <= the smallest side among the images),
    then box-downsampled level by level down to 4x4. Files that cannot be read are skipped and listed in the
    report (never fatal); no readable image at all is an error. The dataset appears at `out_dir` in one rename
    when complete, so an interrupted run leaves nothing behind. Returns a DatasetReport.
    """
    if not isinstance(src_dir, (str, os.PathLike)):
        raise TypeError(f"src_dir must be a path; got {type(src_dir).__name__}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path; got {type(out_dir).__name__}")
    src_dir, out_dir = os.fspath(src_dir), os.fspath(out_dir)
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"src_dir {src_dir!r} is not a directory")
    if resolution is not None:
        resolution = _check_resolution(resolution)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"out_dir {out_dir!r} already exists and is not empty; choose a new path")

    skipped = []
    candidates = []
    for path in _list_files(src_dir):
        ext = os.path.splitext(path)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            skipped.append((path, f"not an image file (extension {ext or 'none'!r}; expected one of "
                                  f"{', '.join(IMAGE_EXTENSIONS)})"))
            continue
        candidates.append(path)

    # Pass 1: headers only (cheap), so that the output can be preallocated and the resolution chosen.
    good = []
    min_side = None
    for path in _progress(candidates, len(candidates), "scanning", progress):
        try:
            w, h = _scan(path)
        except Exception as exc:  # noqa: BLE001 -- any decoder failure means "skip this file"
            skipped.append((path, _reason(exc)))
            continue
        good.append(path)
        min_side = min(w, h) if min_side is None else min(min_side, w, h)
    if not good:
        _print_skipped(skipped)
        raise ValueError(f"src_dir {src_dir!r} contains no readable image (looked for {', '.join(IMAGE_EXTENSIONS)}"
                         f" recursively; {len(skipped)} file(s) skipped)")
    if resolution is None:
        if min_side < MIN_RESOLUTION:
            raise ValueError(f"the smallest image in {src_dir!r} is {min_side} pixels on its short side; at least "
                             f"{MIN_RESOLUTION} is needed (or pass resolution= to upscale)")
        resolution = 2 ** int(math.floor(math.log2(min_side)))
    res_log2 = int(round(math.log2(resolution)))

    # Pass 2: full decode, straight into the memmaps.
    writer = _LevelWriter(out_dir, len(good), res_log2)
    upscaled = 0
    try:
        for path in _progress(good, len(good), "writing", progress):
            try:
                arr, up = _load_square(path, resolution)
            except Exception as exc:  # noqa: BLE001 -- truncated data only shows on a full decode
                skipped.append((path, _reason(exc)))
                continue
            upscaled += up
            writer.add(arr)
        if writer.count == 0:
            raise ValueError(f"src_dir {src_dir!r} contains no readable image ({len(skipped)} file(s) skipped)")
        writer.commit({
            "format": FORMAT, "version": FORMAT_VERSION, "resolution": resolution, "resolution_log2": res_log2,
            "channels": 3, "dtype": "uint8", "layout": "NCHW",
            "levels": {str(k): _level_file(k) for k in range(2, res_log2 + 1)},
            "source": os.path.abspath(src_dir),
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
        })
    except BaseException:
        writer.abort()
        _print_skipped(skipped)
        raise
    _print_skipped(skipped)
    return DatasetReport(path=os.path.abspath(out_dir), resolution=resolution, num_images=writer.count,
                         skipped=skipped, upscaled=upscaled)


def _reason(exc):
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _print_skipped(skipped, limit=10):
    if not skipped:
        return
    print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
    for path, reason in skipped[:limit]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (all listed in the dataset's {MANIFEST})", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Reading


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
            raise ValueError(f"dataset manifest {manifest_path!r} is corrupt: {_reason(exc)}") from exc
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
                raise ValueError(f"dataset level file {file!r} is missing or corrupt: {_reason(exc)}") from exc
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


# ---------------------------------------------------------------------------------------------------------------
# Default dataset


def cache_dir():
    """progan_fast's user cache ($XDG_CACHE_HOME or ~/.cache, then progan_fast), shared with the Makefile."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "progan_fast")


def default_dataset(path=None, resolution=32, progress=True):
    """Path of the embedded procedural "shapes" dataset (4096 images of one circle, square or triangle), generated
    deterministically on first use (a few seconds) and cached; nothing is downloaded. `path` overrides the cache
    location (default: <cache_dir()>/datasets/shapes-<resolution>-v<SHAPES_VERSION>)."""
    from .shapes import render_shapes
    resolution = _check_resolution(resolution)
    if path is None:
        path = os.path.join(cache_dir(), "datasets", f"shapes-{resolution}-v{SHAPES_VERSION}")
    elif not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path or None; got {type(path).__name__}")
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(os.path.join(path, MANIFEST)):
        ds = MultiResDataset(path)  # validates
        if ds.resolution != resolution or ds.manifest.get("source") != f"shapes-v{SHAPES_VERSION}":
            raise ValueError(f"path {path!r} holds a different dataset ({ds!r}); expected shapes at "
                             f"{resolution}x{resolution}")
        return path

    rng = np.random.default_rng(SHAPES_SEED)
    # Chunks bound the rendering's memory (about 1M float32 per temporary array).
    chunk = max(1, (1 << 20) // (resolution * resolution))
    res_log2 = int(round(math.log2(resolution)))
    try:
        writer = _LevelWriter(path, SHAPES_NUM_IMAGES, res_log2)
    except FileExistsError:
        raise FileExistsError(f"path {path!r} exists, is not empty and is not a dataset") from None
    try:
        from tqdm import tqdm
        with tqdm(total=SHAPES_NUM_IMAGES, desc=f"generating shapes {resolution}x{resolution}", unit="img",
                  disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, SHAPES_NUM_IMAGES, chunk):
                n = min(chunk, SHAPES_NUM_IMAGES - start)
                writer.add(render_shapes(n, resolution, rng))
                bar.update(n)
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "resolution": resolution, "resolution_log2": res_log2,
            "channels": 3, "dtype": "uint8", "layout": "NCHW",
            "levels": {str(k): _level_file(k) for k in range(2, res_log2 + 1)},
            "source": f"shapes-v{SHAPES_VERSION}", "seed": SHAPES_SEED, "skipped": [],
        }
        try:
            writer.commit(manifest)
        except OSError:
            # Another process published the same dataset first; theirs is identical (same seed), so use it.
            if not os.path.isfile(os.path.join(path, MANIFEST)):
                raise
            MultiResDataset(path)
    except BaseException:
        writer.abort()
        raise
    return path


# ---------------------------------------------------------------------------------------------------------------
# Image grids


def to_uint8(images):
    """[-1, 1] float -> uint8 like the official Gs.run(out_mul=127.5, out_add=127.5, out_dtype=uint8):
    round half to even, then saturate. Accepts a torch tensor (returned on its device) or a numpy array."""
    if isinstance(images, np.ndarray):
        return np.rint(images.astype(np.float32) * np.float32(127.5) + np.float32(127.5)).clip(0, 255).astype(
            np.uint8)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor or numpy array; got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [-1, 1]; got {images.dtype}")
    return torch.round(images.detach().float() * 127.5 + 127.5).clamp_(0, 255).to(torch.uint8)


def save_image_grid(images, path, nrow=None):
    """Writes N images (uint8 in [0, 255] or float in [-1, 1]; NCHW with C = 1 or 3; torch or numpy) as one PNG
    grid with `nrow` images per row (default: a near-square grid). The file appears atomically."""
    import PIL.Image
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        images = (to_uint8(images) if images.is_floating_point() else images).numpy()
    elif isinstance(images, np.ndarray):
        images = to_uint8(images) if images.dtype.kind == "f" else images
    else:
        raise TypeError(f"images must be a torch.Tensor or numpy array; got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 or floating point; got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must be N x C x H x W with N >= 1 and C in (1, 3); got shape {images.shape}")
    n, c, h, w = images.shape
    if nrow is None:
        nrow = int(math.ceil(math.sqrt(n)))
    elif isinstance(nrow, bool) or not isinstance(nrow, numbers.Integral) or nrow < 1:
        raise ValueError(f"nrow must be a positive int or None; got {nrow!r}")
    nrow = min(int(nrow), n)
    ncol_rows = int(math.ceil(n / nrow))
    grid = np.zeros((ncol_rows * h, nrow * w, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i].transpose(1, 2, 0)
    img = PIL.Image.fromarray(grid[:, :, 0] if c == 1 else grid, "L" if c == 1 else "RGB")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".grid-", suffix=".png", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
