"""patch: other trainers' training steps with and without progan_fast.patch (benchmarks/patch_steps.py), CPU,
float32, interleaved in one process.

Each timed round runs one library step and one patched step, alternating which goes first; extra_info holds the
median and minimum seconds per step of each, images/s, and speedup = library / patched (the images/s ratio), and
the same from the process's CPU time (`speedup_cpu_time`: on a shared machine a one-thread run is preempted by
other jobs, which wall time counts and CPU time does not). A third step, `winograd`, is the patched one with the
user's opt-in `progan_fast.set_conv_algorithm("winograd")` (`speedup_winograd`): not the library's numerics to the
last bit, so the patch itself never chooses it. The pytest-benchmark statistics themselves are of a whole round. Cases (32x32, fading at alpha 0.5):
  pro-gan-pth:     its own step (ProGAN.optimize_discriminator, update_average, optimize_generator), depth 5,
                   batch 8, 128 feature maps at every stage and latent 512. The library's channel table is 512 at
                   every stage up to 32x32: one such step took about 50 s at batch 4 on the shared 2-core machine,
                   too long to repeat, hence 128.
  pytorch_GAN_zoo: its trainer's iteration on GNet / DNet (the stand-in in tests/patch/gan_zoo), 128 feature maps
                   at every scale, latent 512, batch 16 (its default minibatch), minibatch stddev on.
Smoke mode (--benchmark-disable) runs one round of tiny networks on one thread. Timings are never asserted.
"""
import math
import statistics
import time

import pytest
import torch

import progan_fast

from .patch_steps import gan_zoo_networks, gan_zoo_step, pro_gan_pth_step

GROUP = "patch"
ALPHA = 0.5
ROUNDS = 5

CONFIGS = {
    "pro-gan-pth": {"depth": 5, "batch": 8, "channels": 128, "latent_size": 512},
    "pytorch_GAN_zoo": {"scales": 3, "batch": 16, "channels": 128, "latent_size": 512},
}
SMOKE_CONFIGS = {
    "pro-gan-pth": {"depth": 3, "batch": 4, "channels": 8, "latent_size": 8},
    "pytorch_GAN_zoo": {"scales": 1, "batch": 4, "channels": 8, "latent_size": 8},
}


def _winograd(step):
    """The patched step with its 3x3 convs by Winograd: the user's opt-in (progan_fast.set_conv_algorithm), which
    changes float32 rounding (about ten times a direct conv's), so the patch never makes it."""
    def run():
        with progan_fast.use_conv_algorithm("winograd"):
            return step()
    return run


def _steps(library, config):
    """{impl: step} for the library's own step, the patched one and the patched one with Winograd convs, each on
    its own networks and optimizer state from the same initial parameters."""
    if library == "pro-gan-pth":
        args = (config["depth"], config["batch"], ALPHA)
        kwargs = {"channels": config["channels"], "latent_size": config["latent_size"]}
        return {"library": pro_gan_pth_step(False, *args, **kwargs), "patched": pro_gan_pth_step(True, *args, **kwargs),
                "winograd": _winograd(pro_gan_pth_step(True, *args, **kwargs))}
    networks = gan_zoo_networks(config["channels"], config["scales"], config["latent_size"])
    return {"library": gan_zoo_step(networks, False, config["batch"], ALPHA),
            "patched": gan_zoo_step(networks, True, config["batch"], ALPHA),
            "winograd": _winograd(gan_zoo_step(networks, True, config["batch"], ALPHA))}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


@pytest.mark.parametrize("library", list(CONFIGS))
def test_patch_step(benchmark, bench_session, library):
    config = (SMOKE_CONFIGS if bench_session.smoke else CONFIGS)[library]
    steps = _steps(library, config)
    times = {impl: [] for impl in steps}
    cpu_times = {impl: [] for impl in steps}

    def run(impl, step):
        start, cpu_start = time.perf_counter(), time.process_time()
        losses = step()
        times[impl].append(time.perf_counter() - start)
        cpu_times[impl].append(time.process_time() - cpu_start)
        assert all(math.isfinite(v) for v in losses), (impl, losses)

    def rounds():
        order = list(steps.items())
        if len(times["library"]) % 2:
            order.reverse()
        for impl, step in order:
            run(impl, step)

    benchmark.group = GROUP
    rounds()  # first touch, allocator warm-up: not counted
    for record in (times, cpu_times):
        for impl in record:
            record[impl].clear()
    threads = torch.get_num_threads()
    if benchmark.disabled:
        torch.set_num_threads(1)
        try:
            benchmark(rounds)
        finally:
            torch.set_num_threads(threads)
    else:
        benchmark.pedantic(rounds, rounds=ROUNDS, iterations=1)

    median = {impl: statistics.median(t) for impl, t in times.items()}
    best = {impl: min(t) for impl, t in times.items()}
    cpu_median = {impl: statistics.median(t) for impl, t in cpu_times.items()}
    images = config["batch"]
    size = 2 ** config["depth"] if "depth" in config else 4 * 2 ** config["scales"]
    benchmark.extra_info.update({
        "kind": "patch", "group": GROUP, "library": library, "case": f"{size}x{size}", "images": images,
        "alpha": ALPHA, "config": dict(config), "rounds": len(times["library"]),
        "median_s": median, "min_s": best,
        "images_per_s": {impl: images / t for impl, t in median.items()},
        "images_per_s_library": images / median["library"], "images_per_s_patched": images / median["patched"],
        "speedup": median["library"] / median["patched"], "speedup_min": best["library"] / best["patched"],
        "cpu_median_s": cpu_median, "speedup_cpu_time": cpu_median["library"] / cpu_median["patched"],
        "speedup_winograd": median["library"] / median["winograd"],
        "speedup_winograd_cpu_time": cpu_median["library"] / cpu_median["winograd"],
        "threads": 1 if benchmark.disabled else threads, "cpu": cpu_name(), "smoke": bench_session.smoke,
        "malloc_tuned": bench_session.malloc_tuned, "torch": torch.__version__,
    })
