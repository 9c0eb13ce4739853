"""Shared pieces of every op benchmark (CONTRACT section 7).

An op benchmark module declares, per direction, a function that builds the timed callable for one implementation
("eager": the reference in plain PyTorch, "compile": the reference under torch.compile, or a progan_fast backend
such as "cpu"), and calls `measure(...)`. `measure` times it with pytest-benchmark, and fills `extra_info` with the
shape, dtype, layout, bytes moved, the copy-bandwidth roofline and the speedups over eager and compile measured
earlier in the same session (implementations of one case run in the order eager, compile, progan_fast).
"""
import ctypes
import time

import torch

# Standard shapes (N, C, H, W), float32, each in both layouts.
SHAPES = {"S1": (16, 512, 8, 8), "S2": (16, 256, 32, 32), "S3": (16, 128, 64, 64)}
# The RGB images the fade-in blends work on (G's output and the reals at the resolution fading in): cache-resident,
# so judged against torch.compile only.
RGB_SHAPES = {"RGB32": (16, 3, 32, 32), "RGB64": (16, 3, 64, 64), "RGB128": (16, 3, 128, 128)}
# Shapes whose tensors are far larger than the caches: judged against the DRAM roofline; the others only against
# torch.compile.
ROOFLINE_SHAPES = ("S2", "S3")
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DIRECTIONS = ("forward", "forward+backward", "double-backward")
DTYPE = torch.float32

# Contract targets (forward+backward, float32).
TARGET_ROOFLINE_FRACTION = 0.80
TARGET_SPEEDUP_WHEN_COMPILE_SLOW = 1.5
COMPILE_SLOW_ROOFLINE_FRACTION = 0.55

_COPY_NUMEL_FULL = 64 * 1024 * 1024  # 256 MiB of float32: far beyond any last-level cache
_COPY_NUMEL_SMOKE = 4 * 1024 * 1024


def make_input(shape, layout, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=DTYPE).contiguous(memory_format=LAYOUTS[layout])
    return x.requires_grad_(requires_grad)


def tensor_bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_copy_bandwidth(smoke=False):
    """Copy bandwidth in GB/s (bytes read + bytes written per second) of a large `dst.copy_(src)`, best of several."""
    numel = _COPY_NUMEL_SMOKE if smoke else _COPY_NUMEL_FULL
    src = torch.randn(numel)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    best = float("inf")
    for _ in range(1 if smoke else 20):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * tensor_bytes(src) / best / 1e9


def tune_malloc():
    """Keep glibc from returning large blocks to the OS after every free.

    With the default (dynamic) thresholds, blocks above 32 MiB are fresh mmaps: every S3 output would be
    page-faulted in anew on each call (about 10-20 ms per 33.5 MB tensor on this VM, more than the kernel itself),
    for every implementation alike. Production runs get the same effect from jemalloc/tcmalloc or
    MALLOC_MMAP_THRESHOLD_; `--benchmark-default-malloc` measures without it. Returns whether it was applied.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, (1 << 31) - 1))


class Session:
    """Per-session state: the copy bandwidth and the medians measured so far, keyed by case and implementation."""

    def __init__(self, smoke, malloc_tuned):
        self.smoke = smoke
        self.malloc_tuned = malloc_tuned
        self._bandwidth = None
        self.medians = {}
        # measure_throughput: {(group, *case): {impl: median seconds}}
        self.throughputs = {}

    @property
    def copy_bandwidth(self):
        if self._bandwidth is None:
            self._bandwidth = measure_copy_bandwidth(self.smoke)
        return self._bandwidth


def measure(benchmark, session, fn, *, op, direction, impl, shape_name, layout, bytes_moved):
    """Times fn() with pytest-benchmark (its --benchmark-* options apply) and records extra_info for the report.

    fn is called once first, outside the timer: compilation, first touch of the outputs."""
    case = (op, direction, shape_name, layout)
    benchmark.group = f"{op}-{direction}"
    fn()
    if benchmark.disabled:
        # smoke mode: one call, timed here only so the extra_info code runs too
        start = time.perf_counter()
        benchmark(fn)
        seconds = time.perf_counter() - start
    else:
        benchmark(fn)
        seconds = benchmark.stats.stats.median
    session.medians[case + (impl,)] = seconds

    bw = session.copy_bandwidth
    roofline_s = bytes_moved / (bw * 1e9)
    info = {
        "op": op, "direction": direction, "impl": impl, "shape_name": shape_name,
        "shape": list({**SHAPES, **RGB_SHAPES}[shape_name]), "dtype": str(DTYPE).replace("torch.", ""),
        "layout": layout, "bytes_moved": int(bytes_moved), "copy_bandwidth_GBps": round(bw, 2), "roofline_ms": roofline_s * 1e3,
        "roofline_fraction": roofline_s / seconds, "threads": torch.get_num_threads(),
        "malloc_tuned": session.malloc_tuned, "smoke": session.smoke, "torch": torch.__version__,
    }
    for other in ("eager", "compile"):
        other_s = session.medians.get(case + (other,))
        if other != impl and other_s is not None:
            info[f"speedup_vs_{other}"] = other_s / seconds
    benchmark.extra_info.update(info)
    return seconds


def measure_throughput(benchmark, session, fn, *, group, case, impl, images, info=None):
    """Times fn() (one call processes `images` images) with pytest-benchmark and records images/s in extra_info.

    For whole-pipeline groups (train-step, data-loader) that have no roofline: `case` is a tuple of strings naming
    the configuration; each implementation's median is kept in the session, and later implementations of the same
    case get `speedup_vs_<impl>` over the earlier ones. fn is called once first, outside the timer.

    Smoke mode makes one call, on one intra-op thread: on a loaded 2-core machine every OpenMP parallel region of
    a multi-threaded run waits for a scheduler tick (RESULTS.md), which turned one small training iteration
    (about 1000 tiny ops) from 0.09 s into 7 s."""
    benchmark.group = group
    if benchmark.disabled:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            benchmark(fn)
            seconds = time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
    else:
        fn()
        benchmark(fn)
        seconds = benchmark.stats.stats.median
    impls = session.throughputs.setdefault((group,) + tuple(case), {})
    earlier = {other: s for other, s in impls.items() if other != impl}
    impls[impl] = seconds
    extra = {
        "kind": "throughput", "group": group, "case": "-".join(case), "impl": impl, "images": int(images),
        "images_per_s": images / seconds, "ms_per_image": seconds * 1e3 / images,
        "threads": 1 if benchmark.disabled else torch.get_num_threads(),
        "malloc_tuned": session.malloc_tuned, "smoke": session.smoke, "torch": torch.__version__,
    }
    for other, other_s in earlier.items():
        extra[f"speedup_vs_{other}"] = other_s / seconds
    extra.update(info or {})
    benchmark.extra_info.update(extra)
    return seconds
