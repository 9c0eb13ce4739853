"""Shared pieces of every benchmark group (CONTRACT section 7).

Op groups declare their reference function, their public op and their inputs; `build_op_run` makes the timed
callable for one implementation and direction, `op_impls` lists the implementations (eager, compile, and every
progan_fast kernel family registered for the op that runs on the session's device, read from the backend
registry, so a new family shows up in every group without editing it), and `measure` times it with
pytest-benchmark and fills `extra_info` with the shape, dtype, layout, bytes moved, both copy-bandwidth rooflines
(a copy of the same size, and a large copy far beyond the caches) and the speedups over eager and compile
measured earlier in the same session (implementations of one case run in the order eager, compile, kernels).

Whole-pipeline groups (train-step, data-loader) have no roofline: `measure_throughput` times one callable, and
`interleave` times several side by side, one round of each in turn, so that load on the shared machine hits
every case alike.

Every group runs on `Session.device` (`--device cuda` for a GPU, with CUDA-event timing; CPU by default).
"""
import contextlib
import ctypes
import gc
import os
import platform
import re
import math
import time

import torch

from progan_fast import backends

def allow_recompiles():
    """One static compilation per shape and layout of every reference: dynamo's default recompile limit would
    silently fall back to eager after a few shapes (a "compile" case then times eager)."""
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096


# Standard shapes (N, C, H, W), float32, each in both layouts.
SHAPES = {"S1": (16, 512, 8, 8), "S2": (16, 256, 32, 32), "S3": (16, 128, 64, 64)}
# The RGB images the fade-in blends work on (G's output and the reals at the resolution fading in): cache-resident,
# so judged against torch.compile only.
RGB_SHAPES = {"RGB32": (16, 3, 32, 32), "RGB64": (16, 3, 64, 64), "RGB128": (16, 3, 128, 128)}
# Shapes whose tensors are far larger than the caches of a typical CPU: judged against the DRAM roofline; the
# others only against torch.compile (every shape also gets the roofline of a copy of its own size).
ROOFLINE_SHAPES = ("S2", "S3")
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DIRECTIONS = ("forward", "forward+backward", "double-backward")
DTYPE = torch.float32

# Contract targets (forward+backward, float32).
TARGET_ROOFLINE_FRACTION = 0.80
TARGET_SPEEDUP_WHEN_COMPILE_SLOW = 1.5
COMPILE_SLOW_ROOFLINE_FRACTION = 0.55

_COPY_NUMEL_DRAM = 64 * 1024 * 1024  # 256 MiB of float32: far beyond any last-level cache
_COPY_NUMEL_SMOKE = 4 * 1024 * 1024


# ---- where the benchmark runs -----------------------------------------------------------------------------------

def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cache_sizes():
    """{"L1d": bytes, "L2": bytes, "L3": bytes} of cpu0, from sysfs (per instance, as the kernel reports it)."""
    sizes = {}
    root = "/sys/devices/system/cpu/cpu0/cache"
    for index in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        level = _read(f"{root}/{index}/level").strip()
        kind = _read(f"{root}/{index}/type").strip()
        size = _read(f"{root}/{index}/size").strip()
        match = re.fullmatch(r"(\d+)([KMG]?)", size)
        if not level or not match or kind == "Instruction":
            continue
        value = int(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]
        sizes[f"L{level}{'d' if kind == 'Data' else ''}"] = value
    return sizes


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_info():
    """Vendor, model, logical cores, cache sizes and the ISA extensions that matter for the kernels and oneDNN."""
    text = _read("/proc/cpuinfo")

    def field(name):
        match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.M)
        return match.group(1).strip() if match else ""

    flags = set(field("flags").split())
    caches = _cache_sizes()
    return {
        "vendor": field("vendor_id") or platform.processor() or "?",
        "model": field("model name") or platform.machine(),
        "logical_cores": os.cpu_count(),
        "caches": caches,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def describe_cpu(info):
    """One line: 'AMD EPYC (AuthenticAMD), 2 logical cores, L2 1 MiB, L3 32 MiB, AVX-512 (..., avx512_bf16), no AMX'."""
    caches = ", ".join(f"{k} {v / (1 << 20):g} MiB" for k, v in sorted(info.get("caches", {}).items()) if k != "L1d")
    isa = info.get("isa", [])
    avx512 = [f for f in isa if f.startswith("avx512")]
    amx = [f for f in isa if f.startswith("amx")]
    parts = [f"{info.get('model', '?')} ({info.get('vendor', '?')})", f"{info.get('logical_cores', '?')} logical cores"]
    if caches:
        parts.append(caches)
    parts.append(f"AVX-512 ({' '.join(avx512)})" if avx512 else ("AVX2, no AVX-512" if "avx2" in isa else "no AVX2"))
    parts.append(f"AMX ({' '.join(amx)})" if amx else "no AMX")
    parts.append(f"torch kernels {info.get('torch_cpu_capability', '?')}")
    return ", ".join(parts)


def device_info(device):
    info = {"device": str(device), "cpu": cpu_info(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_GiB": round(props.total_memory / (1 << 30), 1),
                       "multiprocessors": props.multi_processor_count}
    return info


# ---- timing ------------------------------------------------------------------------------------------------------

class Clock:
    """Seconds taken by fn(): wall clock on the CPU; on a GPU, CUDA events around fn with the device synchronised
    before it (so earlier work is not counted) and after it (so all of fn's kernels are)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def time(self, fn):
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        torch.cuda.synchronize(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


_cuda_origin = {}


def cuda_event_clock():
    """A pytest-benchmark timer for GPU runs: seconds since the first call, read from a CUDA event recorded on the
    current stream after synchronising it, so `end - start` around a call covers every kernel it launched."""
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    event.synchronize()
    if "event" not in _cuda_origin:
        _cuda_origin["event"] = event
        return 0.0
    return _cuda_origin["event"].elapsed_time(event) / 1e3


def interleave(callables, rounds, clock, warmup=1, first_round=0):
    """{name: [seconds per round]} for each callable, run one after the other in each round; the starting case
    rotates with the round number (counted from `first_round`) so that none always follows the same one.
    `warmup` untimed rounds first."""
    names = list(callables)
    for _ in range(warmup):
        for name in names:
            callables[name]()
    times = {name: [] for name in names}
    for r in range(first_round, first_round + rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(clock.time(callables[name]))
    return times


# ---- memory ------------------------------------------------------------------------------------------------------

def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# glibc's steady state with its default dynamic thresholds: a freed mmapped block raises the mmap threshold to its
# size, up to DEFAULT_MMAP_THRESHOLD_MAX (32 MiB on 64-bit), and the trim threshold follows at twice that.
GLIBC_DEFAULT_STEADY_MMAP = 32 << 20
GLIBC_DEFAULT_STEADY_TRIM = 64 << 20


def set_glibc_thresholds(tuned):
    """tuned=True: progan_fast.tune_allocator()'s setting (blocks up to 1 GiB come from the heap and stay there);
    False: glibc's defaults in their steady state (blocks over 32 MiB are fresh mmaps, page-faulted in on every
    use). Lets one process measure both, interleaved. Returns False when this is not glibc malloc."""
    from progan_fast import allocator
    if tuned:
        return allocator.tune_allocator().kind == "glibc"
    libc = _libc()
    if libc is None or allocator.active_allocator() != "glibc":
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, GLIBC_DEFAULT_STEADY_MMAP)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, GLIBC_DEFAULT_STEADY_TRIM))


def _status_kib(field):
    match = re.search(rf"^{field}:\s+(\d+) kB", _read("/proc/self/status"), re.M)
    return int(match.group(1)) if match else None


def peak_rss(fn):
    """(peak resident bytes of the process while fn() ran, resident bytes before it), after returning free heap
    memory to the OS; None for both where /proc does not allow resetting the peak (VmHWM via clear_refs)."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        fn()
        return None, None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    return peak * 1024, before * 1024


def saved_tensor_bytes(fn, exclude=()):
    """Bytes of the distinct storages autograd saves for backward while fn() runs (torch.autograd.graph.
    saved_tensors_hooks), not counting the storages of `exclude` (the parameters: weights saved by a layer are not
    activation memory). Each storage counts once however many times it is saved; they are kept alive until fn
    returns so that no address is reused and counted twice."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # opaque (e.g. mkldnn) tensors have no storage
            storage, key, nbytes = t, id(t), t.numel() * t.element_size()
        if key not in excluded and key not in storages:
            storages[key] = (storage, nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    total = sum(nbytes for _, nbytes in storages.values())
    storages.clear()
    return total


class _FlopCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the FLOPs of convolutions and matmuls (torch.utils.flop_counter's formulas) of every aten call.
    torch's FlopCounterMode itself also tracks modules with backward hooks, which the double backward of the
    gradient penalty does not support."""

    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry
        self.registry = flop_registry
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = self.registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def count_flops(fn):
    """FLOPs of the convolutions and matmuls (forward and backward) that fn() runs."""
    counter = _FlopCounter()
    with counter:
        fn()
    return counter.total


# ---- op groups ---------------------------------------------------------------------------------------------------

def make_input(shape, layout, requires_grad=False, seed=0, device="cpu", dtype=DTYPE):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype).to(device).contiguous(memory_format=LAYOUTS[layout])
    return x.requires_grad_(requires_grad)


def tensor_bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def kernel_families(op, device):
    """The progan_fast kernel families (backends) that have a kernel for `op` and can run it on `device` in this
    process, read from the backend registry: forcing a family whose kernel the op lacks resolves to `reference`."""
    device = torch.device(device)
    families = []
    for family in backends.KERNEL_BACKENDS:
        if not backends.available(family)[0]:
            continue
        try:
            with backends.use_backend(family):
                if backends.resolve(op, device) == family:
                    families.append(family)
        except backends.BackendUnavailable:
            continue
    return families


def op_impls(op, device):
    """Implementations of one op group: the reference eager, the reference compiled, then each kernel family."""
    return ["eager", "compile"] + kernel_families(op, device)


def build_op_run(direction, impl, reference_fn, op_fn, inputs, grad_outputs, compiled, case):
    """The timed callable of one op group case.

    reference_fn / op_fn take `inputs` (a tuple; those that require grad are differentiated); `impl` is "eager",
    "compile" (reference_fn under torch.compile, one compiled wrapper per `case`) or a progan_fast kernel family
    (op_fn with that backend forced). grad_outputs: (dy, g) where dy is the output gradient (it must require grad
    for the double backward) and g the gradient of the double backward's outputs.
    forward: y = f(*inputs) without grad; forward+backward: dx = grad(f, inputs, dy); double-backward:
    dx = grad(f, inputs, dy, create_graph), then grad(dx, inputs + (dy,), g) (WGAN-GP's penalty gradient).
    """
    if impl == "eager":
        f = reference_fn
    elif impl == "compile":
        f = compiled(case, reference_fn)
    else:
        def f(*args):
            with backends.use_backend(impl):
                return op_fn(*args)
    wrt = tuple(t for t in inputs if t.requires_grad)
    dy, g = grad_outputs if grad_outputs is not None else (None, None)

    if direction == "forward":
        def run():
            with torch.no_grad():
                return f(*inputs)
    elif direction == "forward+backward":
        def run():
            return torch.autograd.grad(f(*inputs), wrt, dy)
    elif direction == "double-backward":
        def run():
            grads = torch.autograd.grad(f(*inputs), wrt, dy, create_graph=True)
            return torch.autograd.grad(grads, wrt + (dy,), (g,) * len(grads))
    else:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    return run


def measure_compute_rates(device="cpu", smoke=False):
    """GFLOP/s of a float32 GEMM (2048^3) and of a float32 3x3 conv forward, 128 -> 128 channels at
    (16, 128, 32, 32) (the train-step's typical layer), best of several: what the step's rate is set against."""
    clock = Clock(device)
    n = 256 if smoke else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    x = torch.randn(2 if smoke else 16, 128, 32, 32, device=device)
    w = torch.randn(128, 128, 3, 3, device=device)
    rates = {}
    for name, fn, flops in (("gemm_float32", lambda: torch.mm(a, b), 2 * n ** 3),
                            ("conv3x3_float32", lambda: torch.nn.functional.conv2d(x, w, padding=1),
                             2 * x.shape[0] * 128 * 128 * 9 * 32 * 32)):
        with torch.no_grad():
            fn()
            best = min(clock.time(fn) for _ in range(2 if smoke else 10))
        rates[f"{name}_gflops"] = flops / best / 1e9
    return rates


def measure_copy_bandwidth(numel, device="cpu", repeats=20):
    """Copy bandwidth in GB/s (bytes read + bytes written per second) of `dst.copy_(src)` with `numel` float32
    elements, best of `repeats` (a copy that fits in a cache measures the cache, which is the point of the
    same-size copy)."""
    clock = Clock(device)
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    best = min(clock.time(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * tensor_bytes(src) / best / 1e9


def last_level_cache_bytes(device):
    """Size of the cache nearest DRAM: the GPU's L2 on a CUDA device, else the CPU's largest cache (sysfs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    return max(_cache_sizes().values(), default=0)


class CacheFlush:
    """Evicts the op's tensors from the last-level cache by writing a buffer of twice its size (a write, so the
    lines it displaces are not kept as clean copies), on the device and untimed: --cold runs call it before every
    timed call, so each call starts from DRAM, as an op does in a step whose other layers filled the cache."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.bytes = 2 * last_level_cache_bytes(self.device)
        self.buffer = torch.empty(max(self.bytes // 4, 1), dtype=torch.float32, device=self.device)

    def __call__(self):
        self.buffer.fill_(1.0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Session:
    """Per-session state: the device, the copy bandwidths and the medians measured so far. cold: flush the
    last-level cache before every timed call (CacheFlush) instead of timing calls back to back."""

    def __init__(self, smoke, malloc_tuned, device="cpu", cold=False):
        self.smoke = smoke
        self.malloc_tuned = malloc_tuned
        self.device = torch.device(device)
        self.flush = CacheFlush(self.device) if cold else None
        self.clock = Clock(self.device)
        self._bandwidth = {}
        self._compute_rates = None
        self.medians = {}
        # measure_throughput: {(group, *case): {impl: median seconds}}
        self.throughputs = {}

    def copy_bandwidth(self, numel=None):
        """GB/s of a copy of `numel` float32 elements (None: the large DRAM copy), measured once per size."""
        if numel is None:
            numel = _COPY_NUMEL_SMOKE if self.smoke else _COPY_NUMEL_DRAM
        if numel not in self._bandwidth:
            self._bandwidth[numel] = measure_copy_bandwidth(numel, self.device, repeats=2 if self.smoke else 20)
        return self._bandwidth[numel]

    def compute_rates(self):
        if self._compute_rates is None:
            self._compute_rates = measure_compute_rates(self.device, self.smoke)
        return self._compute_rates

    def info(self):
        return {"threads": 1 if self.smoke else torch.get_num_threads(), "malloc_tuned": self.malloc_tuned,
                "smoke": self.smoke, "torch": torch.__version__, "device": str(self.device),
                "cold": self.flush is not None}


# Timed calls per case of a --cold run (each after its own cache flush, so pytest-benchmark cannot calibrate them).
COLD_ROUNDS = 20


def _timed(benchmark, fn, session=None):
    """Median seconds of fn under pytest-benchmark; in smoke mode (--benchmark-disable) one call, timed here only
    so that the extra_info code runs too. A --cold session flushes the last-level cache, untimed, before each
    call."""
    flush = session.flush if session is not None else None
    if benchmark.disabled:
        if flush is not None:
            flush()
        start = time.perf_counter()
        benchmark(fn)
        return time.perf_counter() - start
    if flush is not None:
        benchmark.pedantic(fn, setup=flush, rounds=COLD_ROUNDS, iterations=1)
    else:
        benchmark(fn)
    return benchmark.stats.stats.median


def measure(benchmark, session, fn, *, op, direction, impl, shape_name, layout, bytes_moved, shape=None,
            tensor_numel=None, target_speedup_vs_compile=None):
    """Times fn() with pytest-benchmark (its --benchmark-* options apply) and records extra_info for the report.

    fn is called once first, outside the timer: compilation, first touch of the outputs. `shape`: the input shape
    of an op-specific shape name (default: SHAPES[shape_name]); tensor_numel: elements of the op's activation
    tensor, for the roofline of a copy of that size (default: the shape's); `target_speedup_vs_compile`: an op's
    own forward+backward target over torch.compile at this shape, judged by the report beside the contract's."""
    case = (op, direction, shape_name, layout)
    benchmark.group = f"{op}-{direction}"
    fn()
    seconds = _timed(benchmark, fn, session)
    session.medians[case + (impl,)] = seconds

    shape = shape or {**SHAPES, **RGB_SHAPES}[shape_name]
    numel = tensor_numel or math.prod(shape)
    bw = session.copy_bandwidth()
    bw_same = session.copy_bandwidth(numel)
    roofline_s = bytes_moved / (bw * 1e9)
    info = dict(session.info(), **{
        "op": op, "direction": direction, "impl": impl, "shape_name": shape_name, "shape": list(shape),
        "dtype": str(DTYPE).replace("torch.", ""), "layout": layout, "bytes_moved": int(bytes_moved),
        "copy_bandwidth_GBps": round(bw, 2), "roofline_ms": roofline_s * 1e3, "roofline_fraction": roofline_s / seconds,
        "same_size_copy_bandwidth_GBps": round(bw_same, 2),
        "same_size_roofline_fraction": bytes_moved / (bw_same * 1e9) / seconds,
    })
    if target_speedup_vs_compile is not None:
        info["target_speedup_vs_compile"] = target_speedup_vs_compile
    for other in ("eager", "compile"):
        other_s = session.medians.get(case + (other,))
        if other != impl and other_s is not None:
            info[f"speedup_vs_{other}"] = other_s / seconds
    benchmark.extra_info.update(info)
    return seconds


@contextlib.contextmanager
def smoke_threads(session):
    """Smoke mode runs whole-pipeline groups on one intra-op thread: on a loaded 2-core machine every OpenMP
    parallel region of a multi-threaded run waits for a scheduler tick (RESULTS.md), which turned one small
    training iteration (about 1000 tiny ops) from 0.09 s into 7 s."""
    threads = torch.get_num_threads()
    if session.smoke:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure_throughput(benchmark, session, fn, *, group, case, impl, images, info=None):
    """Times fn() (one call processes `images` images) with pytest-benchmark and records images/s in extra_info.

    For whole-pipeline groups without a roofline: `case` is a tuple of strings naming the configuration; each
    implementation's median is kept in the session, and later implementations of the same case get
    `speedup_vs_<impl>` over the earlier ones. fn is called once first, outside the timer."""
    benchmark.group = group
    with smoke_threads(session):
        if not benchmark.disabled:
            fn()
        seconds = _timed(benchmark, fn)
    impls = session.throughputs.setdefault((group,) + tuple(case), {})
    earlier = {other: s for other, s in impls.items() if other != impl}
    impls[impl] = seconds
    extra = dict(session.info(), **{
        "kind": "throughput", "group": group, "case": "-".join(case), "impl": impl, "images": int(images),
        "images_per_s": images / seconds, "ms_per_image": seconds * 1e3 / images})
    for other, other_s in earlier.items():
        extra[f"speedup_vs_{other}"] = other_s / seconds
    extra.update(info or {})
    benchmark.extra_info.update(extra)
    return seconds


def summarize(times):
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
    return {"median_s": median, "min_s": ordered[0], "max_s": ordered[-1], "rounds": len(ordered),
            "times_s": list(times)}


def measure_interleaved(benchmark, session, callables, *, group, rounds, warmup=1):
    """Times several callables side by side (common.interleave) inside one pytest-benchmark record of the group:
    pytest-benchmark's own statistics are those of a whole round (every callable once); each callable's own times
    are returned as {name: summarize(times)} for the caller to put in extra_info. Smoke mode: one call of each."""
    benchmark.group = group
    result = {name: [] for name in callables}

    def one_round():
        times = interleave(callables, 1, session.clock, warmup=0, first_round=len(result[next(iter(result))]))
        for name, t in times.items():
            result[name].extend(t)

    with smoke_threads(session):
        if benchmark.disabled:
            benchmark(one_round)
        else:
            interleave(callables, 0, session.clock, warmup=warmup)
            benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=0, iterations=1)
    return {name: summarize(t) for name, t in result.items()}
