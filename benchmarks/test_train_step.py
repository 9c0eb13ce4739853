"""train-step: one full WGAN-GP training iteration (benchmarks/train_step.py) while fading (alpha 0.5), minibatch
16, 128 feature maps at every resolution, against the unfused plain-PyTorch baseline (benchmarks/baseline.py).

Groups (each case of a resolution runs interleaved with the others in one process, one iteration of each in
turn, so load on the shared machine hits every case alike; extra_info["cases"] holds each case's times,
images/s, ratio to the baseline, bytes saved for backward per iteration and peak resident memory):
  train-step         16x16, 32x32, 64x64: (0) the baseline, (1) progan_fast.models on the reference backend,
                     (2) the baseline with G under torch.compile, (3) progan_fast on each kernel family that runs
                     on the device (from the backend registry), NCHW and channels_last; then bf16 autocast for
                     progan_fast (channels_last) and the baseline.
  train-step-malloc  64x64 and 128x128: the baseline and the fastest float32 progan_fast case with glibc's default
                     malloc thresholds against the raised ones (progan_fast.tune_allocator) that the trainer uses.
  train-step-scale   4x4 .. 256x256: time per image of the baseline and the fastest float32 progan_fast case, with
                     the FLOPs of convolutions and matmuls per image (torch.utils.flop_counter), so the report can
                     say where the step is compute-bound and where it is not. 256x256 runs with fewer feature
                     maps (SCALE_CONFIGS: 32 at 256x256, 64 at 128x128, 128 below), as a full-resolution ProGAN
                     does, so that one iteration stays in seconds on a small CPU.
Smoke mode (--benchmark-disable) runs every case once with a small config on one thread. Timings are never
asserted; only that the losses stay finite.
"""
import pytest
import torch

from . import common
from .train_step import CONFIG, SMOKE_CONFIG, Case, TrainStep

ALPHA = 0.5
RESOLUTIONS = (16, 32, 64)
MALLOC_RESOLUTIONS = (64, 128)
SCALE_RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256)
# Resolutions of the scale group that do not run with CONFIG (fmap_base 4096: 4096 / 2^stage maps, at most 128).
SCALE_CONFIGS = {256: dict(CONFIG, fmap_base=4096)}
# Interleaved rounds per resolution (each round runs every case once), after one warm-up round.
ROUNDS = {4: 10, 8: 10, 16: 8, 32: 5, 64: 3, 128: 2, 256: 2}
BASELINE = Case("baseline")


def _families(device):
    """Kernel families that serve at least one op of the models on this device (the registry decides)."""
    from progan_fast import backends
    found = []
    for op in backends.ops():
        for family in common.kernel_families(op, device):
            if family not in found:
                found.append(family)
    return found


def train_step_cases(device):
    cases = [BASELINE, Case("progan_fast", backend="reference"), Case("baseline", compile_g=True)]
    for family in _families(device):
        cases += [Case("progan_fast", backend=family), Case("progan_fast", backend=family, layout="channels_last")]
    fastest_family = (_families(device) or [None])[0]
    if torch.device(device).type == "cpu" and fastest_family == "cpu":
        cases.append(Case("progan_fast", backend="cpu", layout="channels_last", conv="winograd"))
    cases += [Case("progan_fast", backend=fastest_family, layout="channels_last", amp="bf16"), Case("baseline", amp="bf16")]
    return cases


def _config(session):
    return SMOKE_CONFIG if session.smoke else CONFIG


def _rounds(request, resolution):
    return request.config.getoption("--train-step-rounds") or ROUNDS[resolution]


def _fastest_float32_case(session, resolution):
    """The progan_fast float32 case with the lowest median in this session's train-step group at the nearest
    resolution measured, else the automatic backend in channels_last."""
    measured = getattr(session, "train_steps", {})
    if measured:
        nearest = min(measured, key=lambda r: abs(r - resolution))
        candidates = [(rec["median_s"], rec["case"]) for rec in measured[nearest].values()
                      if rec["case"].models == "progan_fast" and rec["case"].amp == "none"
                      and rec["case"].backend != "reference"]
        if candidates:
            return min(candidates, key=lambda c: c[0])[1]
    families = _families(session.device)
    return Case("progan_fast", backend=families[0] if families else None, layout="channels_last")


def _run_cases(benchmark, session, request, group, resolution, cases, memory=True, config=None):
    config = config or _config(session)
    res_log2 = resolution.bit_length() - 1
    mode = request.config.getoption("--compile-mode")
    steps = {case.name: TrainStep(case, res_log2, ALPHA, config=config, device=session.device, compile_mode=mode)
             for case in cases}
    stats = common.measure_interleaved(benchmark, session, steps, group=group, rounds=_rounds(request, resolution))
    images = config["minibatch"]
    with common.smoke_threads(session):
        records = {case.name: _memory_and_check(session, steps[case.name], dict(stats[case.name], case=case), images,
                                                memory) for case in cases}
    base = records.get(BASELINE.name)
    for rec in records.values():
        if base is not None:
            rec["speedup_vs_baseline"] = base["median_s"] / rec["median_s"]
            rec["speedup_vs_baseline_min"] = base["min_s"] / rec["min_s"]
            if "saved_bytes" in rec and base.get("saved_bytes"):
                rec["saved_vs_baseline"] = rec["saved_bytes"] / base["saved_bytes"]
    benchmark.extra_info.update(dict(session.info(), **{
        "kind": "train-step", "group": group, "resolution": resolution, "alpha": ALPHA, "images": images,
        "config": dict(config),
        "cases": {name: dict({k: v for k, v in rec.items() if k != "case"}, **dataclass_dict(rec["case"]))
                  for name, rec in records.items()}}))
    return records


def _memory_and_check(session, step, rec, images, memory):
    rec["images_per_s"] = images / rec["median_s"]
    if memory:
        rec["saved_bytes"] = step.saved_bytes()
        if session.device.type == "cpu":
            rec["peak_rss_bytes"], rec["rss_before_bytes"] = step.peak_rss()
        else:
            torch.cuda.reset_peak_memory_stats(session.device)
            rec["cuda_before_bytes"] = torch.cuda.memory_allocated(session.device)
            step()
            rec["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(session.device)
    d_loss, g_loss = step.last_losses
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss), (step.case.name, d_loss, g_loss)
    return rec


def dataclass_dict(case):
    return {"models": case.models, "backend": case.backend, "layout": case.layout, "compile_g": case.compile_g,
            "amp": case.amp, "precision": case.precision, "malloc": case.malloc, "conv": case.conv}


@pytest.mark.parametrize("resolution", RESOLUTIONS, ids=[f"{r}x{r}" for r in RESOLUTIONS])
def test_train_step(benchmark, bench_session, request, resolution):
    cases = train_step_cases(bench_session.device)
    if bench_session.smoke and resolution != RESOLUTIONS[0]:
        # compiling G costs most of a smoke run and takes the same code path at every resolution
        cases = [c for c in cases if not c.compile_g]
    records = _run_cases(benchmark, bench_session, request, "train-step", resolution, cases)
    if not hasattr(bench_session, "train_steps"):
        bench_session.train_steps = {}
    bench_session.train_steps[resolution] = records


@pytest.mark.parametrize("resolution", MALLOC_RESOLUTIONS, ids=[f"{r}x{r}" for r in MALLOC_RESOLUTIONS])
def test_train_step_malloc(benchmark, bench_session, request, resolution):
    if bench_session.device.type != "cpu":
        pytest.skip("the malloc setting concerns CPU memory")
    from progan_fast import allocator
    if allocator.active_allocator() != "glibc":
        pytest.skip(f"this process runs {allocator.active_allocator()}, not glibc malloc")
    fastest = _fastest_float32_case(bench_session, resolution)
    cases = [BASELINE, Case("baseline", malloc="default"), fastest,
             Case(fastest.models, fastest.backend, fastest.layout, malloc="default")]
    try:
        _run_cases(benchmark, bench_session, request, "train-step-malloc", resolution, cases, memory=False)
    finally:
        common.set_glibc_thresholds(bench_session.malloc_tuned)


@pytest.mark.parametrize("resolution", SCALE_RESOLUTIONS, ids=[f"{r}x{r}" for r in SCALE_RESOLUTIONS])
def test_train_step_scale(benchmark, bench_session, request, resolution):
    if bench_session.smoke and resolution > 16:
        pytest.skip("smoke mode: the scale group's code paths are the same at every resolution")
    config = _config(bench_session) if bench_session.smoke else SCALE_CONFIGS.get(resolution, CONFIG)
    cases = [BASELINE, _fastest_float32_case(bench_session, resolution)]
    records = _run_cases(benchmark, bench_session, request, "train-step-scale", resolution, cases, memory=False,
                         config=config)
    step = TrainStep(BASELINE, resolution.bit_length() - 1, ALPHA, config=config, device=bench_session.device)
    flops = common.count_flops(step)
    benchmark.extra_info["flops_per_step"] = flops
    benchmark.extra_info["flops_per_image"] = flops / config["minibatch"]
    with common.smoke_threads(bench_session):
        benchmark.extra_info.update(bench_session.compute_rates())
    assert records
