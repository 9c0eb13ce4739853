"""`progan-fast dataset create`: a folder of images -> a multi-resolution dataset directory (see layout.py).

What is read: regular files with an image extension, found recursively in sorted order. Anything else is skipped
and listed with its reason (in the report and the dataset's manifest), never fatal: FIFOs, devices and sockets
(opened without blocking and checked before a byte is read, so a FIFO never hangs the tool), files that fail to
decode, directories reached through a symbolic link (never descended), and file links that resolve outside the
source folder unless follow_links=True (`--follow-links`): a link inside the folder to an image inside it is read.
"""
import math
import os
import stat
import sys
from dataclasses import dataclass, field

import numpy as np

from .layout import FORMAT, FORMAT_VERSION, MANIFEST, MIN_RESOLUTION, check_resolution, error_text, level_file
from .writer import LevelWriter

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="img", dynamic_ncols=True)


def _inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


def _list_candidates(src_dir, follow_links):
    """(image paths to read, [(path, reason) skipped]) in sorted order, directory by directory."""
    real_src = os.path.realpath(src_dir)
    candidates, skipped = [], []
    for root, dirs, names in os.walk(src_dir):
        dirs.sort()
        for name in list(dirs):
            path = os.path.join(root, name)
            if os.path.islink(path):  # os.walk lists links to directories here and does not descend them
                dirs.remove(name)
                skipped.append((path, f"symbolic link to a directory ({os.readlink(path)}), not followed"))
        for name in sorted(names):
            path = os.path.join(root, name)
            ext = os.path.splitext(name)[1].lower()
            if ext not in IMAGE_EXTENSIONS:
                skipped.append((path, f"not an image file (extension {ext or 'none'!r}; expected one of "
                                      f"{', '.join(IMAGE_EXTENSIONS)})"))
                continue
            if os.path.islink(path) and not follow_links:
                target = os.path.realpath(path)
                if not _inside(target, real_src):
                    skipped.append((path, f"symbolic link to {target}, outside the source folder (pass "
                                          "--follow-links to read such links)"))
                    continue
            candidates.append(path)
    return candidates, skipped


_FILE_TYPES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _open_regular(path):
    """A binary file object for `path`, or OSError if it is not a regular file. O_NONBLOCK makes opening a FIFO
    return at once instead of waiting for a writer; on a regular file it changes nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")
            raise OSError(f"{kind}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_image(file):
    """PIL image in RGB, EXIF orientation applied (phone photos are otherwise stored sideways)."""
    import PIL.Image
    import PIL.ImageOps
    img = PIL.Image.open(file)
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
    with _open_regular(path) as f:
        with PIL.Image.open(f) as img:
            img.verify()
        f.seek(0)
        with PIL.Image.open(f) as img:
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
    with _open_regular(path) as f:
        img = _open_image(f)
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


def create_dataset(src_dir, out_dir, resolution=None, progress=True, follow_links=False):
    """Turns a folder of images (searched recursively; png, jpg, jpeg, bmp, webp) into a multi-resolution dataset.

    Every image becomes RGB (grayscale tiled to three channels, alpha dropped), is center-cropped to a square and
    Lanczos-resized to `resolution` (default: the largest power of two <= the smallest side among the images),
    then box-downsampled level by level down to 4x4. Files that cannot be read are skipped and listed in the
    report (never fatal; see the module docstring for what is read, and follow_links); no readable image at all is
    an error. `out_dir` is checked (absent or an empty directory, in a writable place) before any image is read.
    The dataset appears at `out_dir` in one rename when complete, so an interrupted run leaves nothing behind (a
    killed one leaves a hidden `.<name>.partial-*` directory that the next run for the same out_dir deletes).
    Returns a DatasetReport.
    """
    if not isinstance(src_dir, (str, os.PathLike)):
        raise TypeError(f"src_dir must be a path; got {type(src_dir).__name__}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path; got {type(out_dir).__name__}")
    src_dir, out_dir = os.fspath(src_dir), os.fspath(out_dir)
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"src_dir {src_dir!r} is not a directory")
    if resolution is not None:
        resolution = check_resolution(resolution)

    writer = LevelWriter(out_dir)
    try:
        return _create(writer, src_dir, out_dir, resolution, progress, follow_links)
    except BaseException:
        writer.abort()
        raise


def _create(writer, src_dir, out_dir, resolution, progress, follow_links):
    candidates, skipped = _list_candidates(src_dir, follow_links)
    # Pass 1: headers only (cheap), so that the output can be preallocated and the resolution chosen.
    good = []
    min_side = None
    try:
        for path in _progress(candidates, len(candidates), "scanning", progress):
            try:
                w, h = _scan(path)
            except Exception as exc:  # noqa: BLE001 -- any decoder failure means "skip this file"
                skipped.append((path, error_text(exc)))
                continue
            good.append(path)
            min_side = min(w, h) if min_side is None else min(min_side, w, h)
        if not good:
            raise ValueError(f"src_dir {src_dir!r} contains no readable image (looked for "
                             f"{', '.join(IMAGE_EXTENSIONS)} recursively; {len(skipped)} file(s) skipped)")
        if resolution is None:
            if min_side < MIN_RESOLUTION:
                raise ValueError(f"the smallest image in {src_dir!r} is {min_side} pixels on its short side; at "
                                 f"least {MIN_RESOLUTION} is needed (or pass resolution= to upscale)")
            resolution = 2 ** int(math.floor(math.log2(min_side)))
        res_log2 = int(round(math.log2(resolution)))

        # Pass 2: full decode, straight into the memmaps.
        writer.allocate(len(good), res_log2)
        upscaled = 0
        for path in _progress(good, len(good), "writing", progress):
            try:
                arr, up = _load_square(path, resolution)
            except Exception as exc:  # noqa: BLE001 -- truncated data only shows on a full decode
                skipped.append((path, error_text(exc)))
                continue
            upscaled += up
            writer.add(arr)
        if writer.count == 0:
            raise ValueError(f"src_dir {src_dir!r} contains no readable image ({len(skipped)} file(s) skipped)")
        writer.commit({
            "format": FORMAT, "version": FORMAT_VERSION, "resolution": resolution, "resolution_log2": res_log2,
            "channels": 3, "dtype": "uint8", "layout": "NCHW",
            "levels": {str(k): level_file(k) for k in range(2, res_log2 + 1)},
            "source": os.path.abspath(src_dir),
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
        })
    finally:
        _print_skipped(skipped)
    return DatasetReport(path=os.path.abspath(out_dir), resolution=resolution, num_images=writer.count,
                         skipped=skipped, upscaled=upscaled)


def _print_skipped(skipped, limit=10):
    if not skipped:
        return
    print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
    for path, reason in skipped[:limit]:
        print(f"  {path}: {reason}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (all listed in the dataset's {MANIFEST})", file=sys.stderr)
