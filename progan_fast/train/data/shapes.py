"""The embedded procedural dataset: one antialiased circle, square or triangle in one of six bright colours per
image, on a dark, plain or gently graded background. Strong, simple structure so that a small GAN learns it at 32x32 in minutes, and a person can
tell at a glance from a sample grid whether training works (round vs. sharp-cornered shapes, clean edges).

default_dataset() renders it once, deterministically, into the user cache and returns its path; nothing is
downloaded."""
import math
import os

import numpy as np

from .layout import FORMAT, FORMAT_VERSION, MANIFEST, check_resolution, level_file
from .reading import MultiResDataset
from .writer import LevelWriter

# Bump when the rendering changes so that a cached copy of an older one is never reused.
SHAPES_VERSION = 2
SHAPES_SEED = 20180213
SHAPES_NUM_IMAGES = 4096

SHAPES = ("circle", "square", "triangle")
# Farthest reach of each shape from its centre in units of `radius`, at any of the allowed rotations (+-15 deg).
EXTENT = np.array([1.0, 1.09, 1.35])


# Shape colours: six saturated hues a person names at a glance, far from the muted backgrounds.
PALETTE = np.array([[0.95, 0.25, 0.20], [0.20, 0.80, 0.30], [0.25, 0.45, 0.95],
                    [0.98, 0.85, 0.20], [0.20, 0.85, 0.90], [0.90, 0.30, 0.85]])


def _colours(rng, n):
    """Background colour (a dark, slightly tinted grey), its gradient end, and a palette colour for the shape.

    Few, well separated colours keep the distribution simple enough for a small GAN to reproduce in minutes, so
    what a sample grid shows is whether it learned the shapes."""
    grey = 0.12 + rng.random((n, 1)) * 0.25
    bg = np.clip(grey + (rng.random((n, 3)) - 0.5) * 0.12, 0.0, 1.0)
    # Gentle gradient on half of the images: the far end differs by at most 0.1 per channel.
    delta = (rng.random((n, 3)) - 0.5) * 0.2 * (rng.random((n, 1)) < 0.5)
    bg_end = np.clip(bg + delta, 0.0, 1.0)
    fg = PALETTE[np.floor(rng.random(n) * len(PALETTE)).astype(np.int64)]
    return bg, bg_end, fg


def render_shapes(num_images, resolution, rng):
    """num_images x 3 x resolution x resolution uint8, every random quantity drawn from `rng`
    (a numpy Generator) in a fixed order, so a seed fixes the images."""
    n = num_images
    kind = np.floor(rng.random(n) * len(SHAPES)).astype(np.int64)
    # Sizes and positions in units of the image side; the shape always lies entirely inside the image.
    radius = 0.2 + rng.random(n) * 0.12
    margin = radius * EXTENT[kind] + 0.02
    cx = margin + rng.random(n) * (1.0 - 2.0 * margin)
    cy = margin + rng.random(n) * (1.0 - 2.0 * margin)
    angle = (rng.random(n) - 0.5) * np.deg2rad(30.0)
    grad_angle = rng.random(n) * 2.0 * np.pi
    bg, bg_end, fg = _colours(rng, n)

    coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    x = coords[None, None, :]
    y = coords[None, :, None]
    dx = x - cx[:, None, None].astype(np.float32)
    dy = y - cy[:, None, None].astype(np.float32)
    cos = np.cos(angle)[:, None, None].astype(np.float32)
    sin = np.sin(angle)[:, None, None].astype(np.float32)
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    r = radius[:, None, None].astype(np.float32)

    # Signed distance to the outline (negative inside; exact near the edges, which is all that matters here).
    k = kind[:, None, None]
    circle = np.sqrt(dx * dx + dy * dy) - r
    # Squares use `radius` scaled so that all three shapes have similar areas.
    square = np.maximum(np.abs(u), np.abs(v)) - r * np.float32(0.886)
    # Equilateral triangle, apex up (image y points down): the edges' outward normals point at 90, 210 and 330
    # degrees, inradius half the circumradius.
    # Circumradius 1.3 r, shifted so that the centre is that of its bounding box rather than its centroid.
    half = r * np.float32(0.65)
    vt = v - r * np.float32(0.325)
    triangle = np.maximum(np.maximum(vt, np.float32(-0.8660254) * u - np.float32(0.5) * vt),
                          np.float32(0.8660254) * u - np.float32(0.5) * vt) - half
    dist = np.where(k == 0, circle, np.where(k == 1, square, triangle))
    # Antialiasing: the fraction of a pixel covered by a straight edge at that distance (box filter).
    coverage = np.clip(np.float32(0.5) - dist * np.float32(resolution), 0.0, 1.0)

    t = (np.cos(grad_angle)[:, None, None] * (x - 0.5) + np.sin(grad_angle)[:, None, None] * (y - 0.5)) + 0.5
    t = np.clip(t, 0.0, 1.0).astype(np.float32)[:, None]
    background = (bg[:, :, None, None] + (bg_end - bg)[:, :, None, None] * t).astype(np.float32)
    image = background + (fg[:, :, None, None].astype(np.float32) - background) * coverage[:, None]
    return np.rint(image * np.float32(255.0)).clip(0, 255).astype(np.uint8)


def cache_dir():
    """progan_fast's user cache ($XDG_CACHE_HOME or ~/.cache, then progan_fast), shared with the Makefile."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "progan_fast")


def default_dataset_path(resolution=32):
    """Where default_dataset(resolution=...) keeps its copy (whether or not it exists yet)."""
    resolution = check_resolution(resolution)
    return os.path.join(cache_dir(), "datasets", f"shapes-{resolution}-v{SHAPES_VERSION}")


def default_dataset(path=None, resolution=32, progress=True):
    """Path of the embedded procedural "shapes" dataset (4096 images of one circle, square or triangle), generated
    deterministically on first use (a few seconds) and cached; nothing is downloaded. `path` overrides the cache
    location (default: default_dataset_path(resolution))."""
    resolution = check_resolution(resolution)
    if path is None:
        path = default_dataset_path(resolution)
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
        writer = LevelWriter(path)
    except FileExistsError:
        raise FileExistsError(f"path {path!r} exists, is not empty and is not a dataset") from None
    try:
        writer.allocate(SHAPES_NUM_IMAGES, res_log2)
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
            "levels": {str(k): level_file(k) for k in range(2, res_log2 + 1)},
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
