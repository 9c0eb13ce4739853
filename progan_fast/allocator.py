"""The CPU memory allocator setting for training: `progan_fast.tune_allocator()`.

With glibc's default (dynamic) thresholds, a freed block of up to 32 MiB raises the mmap threshold, but larger
blocks are always fresh mmaps, and the heap top above 64 MiB is trimmed on free. From 64x64 up (minibatch 16, 128
feature maps: 33.5 MB activations) every activation of a training step is then mapped, page-faulted in and
unmapped again on every step: measured at (16, 128, 64, 64), a pixel norm forward, a `torch.mul` or an
`empty_like(x).fill_` took 11-16 ms each with the defaults and 2.4-3.3 ms with the thresholds raised.

`tune_allocator()` raises glibc's mmap threshold to 1 GiB and its trim threshold to 2 GiB (mallopt), so such blocks
come from the heap and are reused; the resident size then stays near the step's peak instead of returning to the
OS between steps. jemalloc and tcmalloc (LD_PRELOAD) reuse large blocks by themselves and are left alone.
`PROGAN_FAST_MALLOC=default` skips the tuning (to measure without it). The trainer and `make demo` call it at
start and log the result; anyone else training on the CPU calls it once before building the networks.
"""
import ctypes
import dataclasses
import os

ENV_VAR = "PROGAN_FAST_MALLOC"
GLIBC_MMAP_THRESHOLD = 1 << 30
GLIBC_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@dataclasses.dataclass(frozen=True)
class AllocatorSetting:
    kind: str          # "jemalloc", "tcmalloc", "glibc" or "unknown"
    tuned: bool        # large blocks are reused across steps
    description: str   # one line for a run log

    def __str__(self):
        return self.description


def active_allocator():
    """Which malloc serves this process: "jemalloc" or "tcmalloc" when one is loaded (LD_PRELOAD), else "glibc"
    when the C library is glibc, else "unknown"."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        maps = ""
    for kind in ("jemalloc", "tcmalloc"):
        if f"lib{kind}" in maps:
            return kind
    libc = _glibc()
    return "glibc" if libc is not None else "unknown"


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator():
    """Make large CPU blocks reusable across training steps; returns the AllocatorSetting in effect (its str() is
    a line for the run log). Safe to call more than once and in any process; it never raises."""
    kind = active_allocator()
    if kind in ("jemalloc", "tcmalloc"):
        return AllocatorSetting(kind, True, f"{kind} (preloaded): large blocks are reused across steps")
    if kind != "glibc":
        return AllocatorSetting(kind, False, "unknown C library: allocator left as it is")
    if os.environ.get(ENV_VAR, "").strip().lower() == "default":
        return AllocatorSetting("glibc", False, f"glibc malloc with its default thresholds ({ENV_VAR}=default): "
                                               "blocks over 32 MiB are mapped and page-faulted in on every step")
    libc = _glibc()
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD))
    if not ok:
        return AllocatorSetting("glibc", False, "glibc malloc: mallopt refused the thresholds; defaults kept")
    version = libc.gnu_get_libc_version().decode()
    return AllocatorSetting("glibc", True, f"glibc {version} malloc, mmap threshold 1 GiB and trim threshold 2 GiB "
                                           "(mallopt): large blocks are reused across steps")
