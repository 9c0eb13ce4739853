"""The on-disk layout of a dataset directory (FORMAT_VERSION 1), shared by its writers and its reader:

  manifest.json   {"format", "version", "resolution", "resolution_log2", "num_images", "channels", "levels",
                   "source", "skipped"}
  r02.npy ... rNN.npy   level 2^k as uint8 [num_images, channels, 2^k, 2^k] (NCHW), C-contiguous.

Levels below the top are 2x2 box-downsampled like the official dataset tool (TFRecordExporter.add_image): the
mean is taken over the float32 image of the level above *before* its rounding, then rint (half to even) and clip.
"""
import numbers

FORMAT = "progan_fast-multires"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MIN_RESOLUTION = 4


def level_file(res_log2):
    return f"r{res_log2:02d}.npy"


def check_resolution(resolution, name="resolution"):
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral):
        raise TypeError(f"{name} must be an int power of two; got {type(resolution).__name__}")
    resolution = int(resolution)
    if resolution < MIN_RESOLUTION or resolution & (resolution - 1):
        raise ValueError(f"{name} must be a power of two >= {MIN_RESOLUTION}; got {resolution}")
    return resolution


def error_text(exc):
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
