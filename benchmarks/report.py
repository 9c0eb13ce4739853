"""Report of a benchmark run: `python -m benchmarks.report results.json [more.json ...] [--out DIR]`.

Writes DIR/report.md (default benchmarks/report/) with PNG charts beside it, prints the Markdown, and exits with
status 1 naming every missed target (status 0 when all are met; CI never runs it: `make test` runs the benchmarks
with --benchmark-disable, which records no timings).

Given several runs of the same suite (the machine is shared, so repeat and keep the best), each op case keeps the
run with the lowest statistic per implementation; a train-step resolution keeps the whole run (all its cases,
measured interleaved) whose baseline was fastest, so its ratios stay those of one interleaved measurement.
Targets:
  ops, forward+backward (CONTRACT section 7): never slower than torch.compile of the reference; at S2/S3 >= 80 % of
      the DRAM copy roofline, and >= 1.5x compile where compile is below 55 % of that roofline;
  train-step, CPU, float32, 32x32 and 64x64: the fastest progan_fast case >= 1.7x the images/s of the unfused
      baseline, with <= 0.5x its bytes saved for backward per iteration;
  bf16 (CPUs with AVX-512 BF16 or AMX): progan_fast under bf16 autocast >= 3x the float32 baseline's images/s;
  patch, CPU, float32: another trainer's step after progan_fast.patch() >= 1.5x its images/s unpatched (the
      Winograd opt-in is reported beside it, not counted).
Whole-pipeline groups without targets (data-loader) are listed in a table of their own.
"""
import argparse
import json
import os
import sys

from . import common

KERNEL_ORDER = ("cpu", "cuda", "triton")
# Whole-layer implementations beyond the kernel families: the cpu family with its 3x3 convs by Winograd.
LAYER_ONLY_IMPLS = ("cpu-winograd",)
TRAIN_SPEEDUP_TARGET = 1.7
TRAIN_SAVED_TARGET = 0.5
TRAIN_TARGET_RESOLUTIONS = (32, 64)
BF16_SPEEDUP_TARGET = 3.0
PATCH_SPEEDUP_TARGET = 1.5
BASELINE = "baseline"


def _load_json(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    return runs


def _timed(b):
    return bool(b.get("stats")) and "median" in b["stats"]


def load(runs, stat="median"):
    """{(op, direction, shape, layout): {impl: record}} of the op groups, keeping the lowest `stat` per
    implementation; the record's "median" field holds that statistic (median or min) and is what ratios use."""
    cases = {}
    for data in runs:
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            if info.get("kind") == "layer" or "op" not in info or not _timed(b):
                continue
            key = (info["op"], info["direction"], info["shape_name"], info["layout"])
            rec = {"median": b["stats"][stat], "min": b["stats"]["min"], "info": info}
            impls = cases.setdefault(key, {})
            if info["impl"] not in impls or rec["median"] < impls[info["impl"]]["median"]:
                impls[info["impl"]] = rec
    return cases


def load_throughput(runs, stat="median"):
    """{(group, case): {impl: record}} of the measure_throughput records (data-loader)."""
    cases = {}
    for data in runs:
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            if info.get("kind") != "throughput" or not _timed(b):
                continue
            rec = {"median": b["stats"][stat], "min": b["stats"]["min"], "info": info}
            impls = cases.setdefault((info["group"], info["case"]), {})
            if info["impl"] not in impls or rec["median"] < impls[info["impl"]]["median"]:
                impls[info["impl"]] = rec
    return cases


def load_train_steps(runs, stat="median"):
    """{(group, resolution): extra_info} of the train-step groups, one whole interleaved run per resolution (the
    run whose baseline was fastest by `stat`)."""
    key_stat = "median_s" if stat == "median" else "min_s"
    found = {}
    for data in runs:
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            if info.get("kind") != "train-step" or info.get("smoke") or not _timed(b):
                continue
            key = (info["group"], info["resolution"])
            base = info["cases"].get(BASELINE, {}).get(key_stat, float("inf"))
            if key not in found or base < found[key][0]:
                found[key] = (base, info)
    return {key: info for key, (_, info) in found.items()}


def machine_lines(runs):
    """Where the runs ran: CPU (vendor, model, caches, ISA), GPU if any, torch, threads, allocator."""
    lines = []
    seen = set()
    for data in runs:
        machine = data.get("machine_info", {})
        info = machine.get("progan_fast")
        if info is None:  # a run from before the machine record: what pytest-benchmark knew
            cpu = machine.get("cpu", {})
            line = f"{cpu.get('brand_raw', machine.get('processor', '?'))}, {cpu.get('count', '?')} logical cores"
        else:
            line = common.describe_cpu(info["cpu"])
            if "gpu" in info:
                gpu = info["gpu"]
                line += f"; GPU {gpu['name']} (sm_{gpu['capability'].replace('.', '')}, {gpu['memory_GiB']} GiB)"
            line += f"; device {info['device']}; torch {info['torch']}"
        if line not in seen:
            seen.add(line)
            lines.append(f"- {line} (runs of {data.get('datetime', '?')[:16]})")
    return lines


def _fmt_pct(frac, in_cache=False):
    return f"({frac:.0%}, in cache)" if in_cache else f"{frac:.0%}"


def judge(shape_name, kernel, compile_rec):
    """(met, list of reasons it is not) for a forward+backward op case."""
    reasons = []
    frac = kernel["info"]["roofline_ms"] / 1e3 / kernel["median"]
    if compile_rec is not None:
        ratio = compile_rec["median"] / kernel["median"]
        if ratio < 1.0:
            reasons.append(f"slower than compile ({ratio:.2f}x)")
        compile_frac = compile_rec["info"]["roofline_ms"] / 1e3 / compile_rec["median"]
        if (shape_name in common.ROOFLINE_SHAPES and compile_frac < common.COMPILE_SLOW_ROOFLINE_FRACTION
                and ratio < common.TARGET_SPEEDUP_WHEN_COMPILE_SLOW):
            reasons.append(f"{ratio:.2f}x compile < {common.TARGET_SPEEDUP_WHEN_COMPILE_SLOW}x "
                           f"(compile at {compile_frac:.0%} of roofline)")
        op_target = kernel["info"].get("target_speedup_vs_compile")
        if op_target is not None and ratio < op_target:
            reasons.append(f"{ratio:.2f}x compile < the op's target {op_target}x")
    else:
        reasons.append("no compile measurement")
    if shape_name in common.ROOFLINE_SHAPES and frac < common.TARGET_ROOFLINE_FRACTION:
        reasons.append(f"{frac:.0%} of roofline < {common.TARGET_ROOFLINE_FRACTION:.0%}")
    return not reasons, reasons


def _cache_state(infos):
    """How the calls met the caches: warm (back to back) or cold (--cold: last-level cache flushed before each)."""
    cold = {bool(i.get("cold")) for i in infos}
    if cold == {True}:
        return "Cold: the last-level cache was flushed (untimed) before every call."
    if cold == {False}:
        return "Warm: calls back to back (tensors that fit stay in the caches; `--cold` flushes them)."
    return "Warm and cold (--cold) runs mixed: each case keeps its best, so read a case's run before comparing."


def render_ops(cases, stat="median"):
    """(markdown lines, shortfalls) of the op groups."""
    ms = lambda rec: "n/a" if rec is None else f"{rec['median'] * 1e3:.3f}"  # noqa: E731
    infos = [r["info"] for impls in cases.values() for r in impls.values()]
    lines = [f"Threads {sorted({i['threads'] for i in infos})}; glibc malloc thresholds raised: "
             f"{'yes' if all(i['malloc_tuned'] for i in infos) else 'no'}. Copy bandwidth, large `copy_` (read + "
             f"write, far beyond the caches): "
             f"{', '.join(f'{b:.1f}' for b in sorted({i['copy_bandwidth_GBps'] for i in infos}))} GB/s. "
             f"{_cache_state(infos)} Times are "
             f"{'medians' if stat == 'median' else 'minima'} in ms (best run kept); progan_fast also shows (min). "
             "`% roofline`: bytes moved / DRAM copy bandwidth over the time; `% same-size`: the same against a copy "
             "of the op's tensor size (cache-resident where the tensor fits in the caches).", ""]
    lines.append("| op | direction | shape | layout | eager ms | compile ms | progan_fast ms | backend "
                 "| vs eager | vs compile | % roofline | % same-size | target met? |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    shortfalls = []
    order = {d: i for i, d in enumerate(common.DIRECTIONS)}
    shape_order = {s: i for i, s in enumerate([*common.SHAPES, *common.RGB_SHAPES])}
    for key in sorted(cases, key=lambda k: (k[0], order.get(k[1], 9), shape_order.get(k[2], 9), k[3])):
        op, direction, shape_name, layout = key
        impls = cases[key]
        eager, comp = impls.get("eager"), impls.get("compile")
        for backend in [b for b in KERNEL_ORDER if b in impls] or [None]:
            kernel = impls.get(backend) if backend else None
            row = [op, direction, shape_name, layout, ms(eager), ms(comp)]
            if kernel is None:
                lines.append("| " + " | ".join(row + ["n/a"] + ["-"] * 6) + " |")
                continue
            info = kernel["info"]
            frac = info["roofline_ms"] / 1e3 / kernel["median"]
            same_bw = info.get("same_size_copy_bandwidth_GBps")
            same = "-" if same_bw is None else f"{info['bytes_moved'] / (same_bw * 1e9) / kernel['median']:.0%}"
            vs_eager = f"{eager['median'] / kernel['median']:.2f}x" if eager else "n/a"
            vs_comp = f"{comp['median'] / kernel['median']:.2f}x" if comp else "n/a"
            if direction == "forward+backward":
                met, reasons = judge(shape_name, kernel, comp)
                verdict = "yes" if met else "NO: " + "; ".join(reasons)
                if not met:
                    shortfalls.append(f"{op} {direction} {shape_name} {layout} ({backend}): {'; '.join(reasons)}")
            else:
                verdict = "(no target)"
            roof = _fmt_pct(frac, shape_name not in common.ROOFLINE_SHAPES)
            lines.append("| " + " | ".join(row + [f"{kernel['median'] * 1e3:.3f} ({kernel['min'] * 1e3:.3f})",
                                                  backend, vs_eager, vs_comp, roof, same, verdict]) + " |")
    return lines, shortfalls


def load_layers(runs, stat="median"):
    """{(op, shape, layout): {impl: record}} of the whole-layer records (kind "layer": a conv layer with its
    epilogue against the same layer written unfused), keeping the lowest `stat` per implementation."""
    cases = {}
    for run in runs:
        for b in run.get("benchmarks", []):
            info = b.get("extra_info", {})
            if info.get("kind") != "layer" or not _timed(b):
                continue
            rec = {"median": b["stats"][stat], "min": b["stats"]["min"], "info": info}
            impls = cases.setdefault((info["op"], info["shape_name"], info["layout"]), {})
            if info["impl"] not in impls or rec["median"] < impls[info["impl"]]["median"]:
                impls[info["impl"]] = rec
    return cases


def render_layers(cases):
    """forward+backward of a whole layer: the unfused layer (eager) against each backend, time and saved bytes."""
    lines = ["| layer | shape | layout | unfused ms | progan_fast ms | backend | speedup | saved for backward, "
             "unfused -> progan_fast |", "|---|---|---|---|---|---|---|---|"]
    shape_order = {s: i for i, s in enumerate([*common.SHAPES, *common.RGB_SHAPES])}
    mib = lambda r: f"{r['info']['saved_for_backward_bytes'] / 2**20:.1f} MiB"  # noqa: E731
    for key in sorted(cases, key=lambda k: (k[0], shape_order.get(k[1], 9), k[2])):
        impls = cases[key]
        eager = impls.get("eager")
        for backend in [b for b in KERNEL_ORDER + LAYER_ONLY_IMPLS if b in impls]:
            rec = impls[backend]
            if eager:
                lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {eager['median'] * 1e3:.2f} | "
                             f"{rec['median'] * 1e3:.2f} | {backend} | {eager['median'] / rec['median']:.2f}x | "
                             f"{mib(eager)} -> {mib(rec)} |")
            else:
                lines.append(f"| {key[0]} | {key[1]} | {key[2]} | n/a | {rec['median'] * 1e3:.2f} | {backend} | n/a | "
                             f"{mib(rec)} |")
    return lines


def load_patch(runs):
    """The patch group's records (kind "patch"), one per run and library: every run is listed, since each one's
    speedup is already a same-process, interleaved ratio."""
    return [b["extra_info"] for run in runs for b in run.get("benchmarks", [])
            if b.get("extra_info", {}).get("kind") == "patch" and _timed(b)]


def render_patch(records):
    """The patch table and its shortfalls: patched (the library's numerics) >= PATCH_SPEEDUP_TARGET x the library's
    images/s, per library, by the best run; the Winograd opt-in is shown beside it and never counts for the target."""
    lines = ["| library | case | images / step | threads | library images/s | patched images/s | speedup (median) | "
             "speedup (min) | speedup (CPU time) | + Winograd opt-in (median / CPU time) | rounds | cpu |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best = {}
    for info in sorted(records, key=lambda i: (i["library"], i["threads"])):
        winograd = (f"{info['speedup_winograd']:.2f}x / {info['speedup_winograd_cpu_time']:.2f}x"
                    if "speedup_winograd" in info else "-")
        lines.append(f"| {info['library']} | {info['case']} | {info['images']} | {info['threads']} | "
                     f"{info['images_per_s_library']:.2f} | {info['images_per_s_patched']:.2f} | "
                     f"{info['speedup']:.2f}x | {info['speedup_min']:.2f}x | "
                     f"{info.get('speedup_cpu_time', float('nan')):.2f}x | {winograd} | {info['rounds']} | "
                     f"{info['cpu']} |")
        if not info.get("smoke"):
            best[info["library"]] = max(best.get(info["library"], 0.0), info["speedup"])
    shortfalls = [f"patch {library}: the patched step runs {speedup:.2f}x the library's images/s < "
                  f"{PATCH_SPEEDUP_TARGET}x" for library, speedup in sorted(best.items())
                  if speedup < PATCH_SPEEDUP_TARGET]
    return lines, shortfalls


def render_throughput(cases, stat="median"):
    """Images/s per case and implementation; the speedup is over the first implementation listed for the case."""
    lines = [f"| group | case | impl | {stat} ms / call | images / call | images/s | speedup | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for group, case in sorted(cases, key=lambda k: (k[0], len(k[1]), k[1])):  # 32x32 before 128x128
        impls = cases[(group, case)]
        first = None
        for impl, rec in impls.items():
            info = rec["info"]
            per_s = info["images"] / rec["median"]
            first = first or rec
            speedup = f"{first['median'] / rec['median']:.2f}x" if rec is not first else "-"
            notes = []
            if "loader_vs_train_step" in info:
                ratio = info["train_step_ms_per_image"] / (rec["median"] * 1e3 / info["images"])
                notes.append(f"{ratio:.0f}x the training images/s ({info['train_step_ms_per_image']:.2f} ms/img: "
                             f"{info['train_step_source']})")
            lines.append(f"| {group} | {case} | {impl} | {rec['median'] * 1e3:.3f} | {info['images']} | "
                         f"{per_s:.1f} | {speedup} | {'; '.join(notes)} |")
    return lines


def _mb(nbytes):
    return "-" if nbytes is None else f"{nbytes / 1e6:.0f}"


def _ratio(case, stat):
    key = "speedup_vs_baseline" if stat == "median" else "speedup_vs_baseline_min"
    return case.get(key)


def _fastest_float32(cases, stat):
    """(name, case) of the fastest float32 progan_fast case on a kernel family (not the reference backend)."""
    key = "median_s" if stat == "median" else "min_s"
    found = [(c[key], name, c) for name, c in cases.items()
             if c["models"] == "progan_fast" and c["precision"] == "float32" and c["backend"] != "reference"
             and c["malloc"] == "tuned"]
    return min(found)[1:] if found else (None, None)


def render_train_steps(steps, stat="median", has_bf16=False):
    """(markdown lines, shortfalls) of the train-step groups."""
    lines, shortfalls = [], []
    key = "median_s" if stat == "median" else "min_s"
    main = sorted(r for g, r in steps if g == "train-step")
    if main:
        any_info = steps[("train-step", main[0])]
        lines += [f"One full WGAN-GP iteration (D step with gradient penalty and drift, EMA, G step), fading "
                  f"(alpha {any_info['alpha']}), minibatch {any_info['images']}, config {any_info['config']}, "
                  f"{any_info['threads']} threads; every case of a resolution measured interleaved in one process. "
                  f"Ratios are to the unfused baseline by {stat}; `saved MB`: distinct storages saved for backward per "
                  "iteration (parameters excluded); `peak RSS`: the process's peak resident memory during one "
                  "iteration (its growth over the resident memory before it in brackets).", "",
                  "| resolution | case | precision | median ms | min ms | images/s | vs baseline | saved MB "
                  "| saved vs baseline | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for res in main:
        info = steps[("train-step", res)]
        for name, c in info["cases"].items():
            ratio = _ratio(c, stat)
            rss = c.get("peak_rss_bytes")
            rss_text = "-" if rss is None else f"{rss / 1e6:.0f} (+{(rss - c['rss_before_bytes']) / 1e6:.0f})"
            if "peak_cuda_bytes" in c:
                rss_text = f"GPU {c['peak_cuda_bytes'] / 1e6:.0f} (+{(c['peak_cuda_bytes'] - c['cuda_before_bytes']) / 1e6:.0f})"
            saved_ratio = c.get("saved_vs_baseline")
            lines.append(f"| {res}x{res} | {name} | {c['precision']} | {c['median_s'] * 1e3:.0f} | "
                         f"{c['min_s'] * 1e3:.0f} | {info['images'] / c[key]:.1f} | "
                         f"{'-' if ratio is None else f'{ratio:.2f}x'} | {_mb(c.get('saved_bytes'))} | "
                         f"{'-' if saved_ratio is None else f'{saved_ratio:.2f}x'} | {rss_text} |")
        if res not in TRAIN_TARGET_RESOLUTIONS or info.get("device", "cpu") != "cpu":
            continue
        name, best = _fastest_float32(info["cases"], stat)
        if best is None:
            shortfalls.append(f"train-step {res}x{res}: no progan_fast kernel case measured")
            continue
        ratio = _ratio(best, stat)
        if ratio is None or ratio < TRAIN_SPEEDUP_TARGET:
            shortfalls.append(f"train-step {res}x{res} float32: {name} runs {ratio or 0:.2f}x the baseline's "
                              f"images/s < {TRAIN_SPEEDUP_TARGET}x")
        saved = best.get("saved_vs_baseline")
        if saved is None or saved > TRAIN_SAVED_TARGET:
            shortfalls.append(f"train-step {res}x{res} float32: {name} saves {saved or 0:.2f}x the baseline's bytes "
                              f"for backward > {TRAIN_SAVED_TARGET}x")
        if has_bf16:
            bf16 = [(c[key], n, c) for n, c in info["cases"].items()
                    if c["models"] == "progan_fast" and c["precision"] == "bf16"]
            if bf16:
                _, n, c = min(bf16)
                r = _ratio(c, stat)
                if r < BF16_SPEEDUP_TARGET:
                    shortfalls.append(f"train-step {res}x{res} bf16: {n} runs {r:.2f}x the float32 baseline's "
                                      f"images/s < {BF16_SPEEDUP_TARGET}x")

    malloc = sorted(r for g, r in steps if g == "train-step-malloc")
    if malloc:
        lines += ["", "Allocator: glibc's default malloc thresholds (blocks over 32 MiB are fresh mmaps, page-"
                  "faulted in on every step; emulated in-process by their steady state) against the raised ones "
                  "the trainer uses (`progan_fast.tune_allocator()`), interleaved.", "",
                  "| resolution | case | median ms | min ms | images/s | tuned vs default |", "|---|---|---|---|---|---|"]
        for res in malloc:
            info = steps[("train-step-malloc", res)]
            cases = info["cases"]
            for name, c in cases.items():
                other = None
                if c["malloc"] == "default":
                    tuned_name = name.replace(" default-malloc", "")
                    if tuned_name in cases:
                        other = f"{c[key] / cases[tuned_name][key]:.2f}x"
                lines.append(f"| {res}x{res} | {name} | {c['median_s'] * 1e3:.0f} | {c['min_s'] * 1e3:.0f} | "
                             f"{info['images'] / c[key]:.1f} | {other or '-'} |")

    scale = sorted(r for g, r in steps if g == "train-step-scale")
    if scale:
        lines += ["", "Scale: time per image of one iteration at each resolution (fading; `maps`: feature maps at "
                  "that resolution); "
                  "`GFLOP/img`: convolution and matmul FLOPs of the baseline's iteration per image; `GFLOP/s`: that "
                  "over the time (the progan_fast column counts the baseline's FLOPs: its fused up/down convs do "
                  "fewer).", "",
                  "| resolution | maps | baseline ms/img | progan_fast ms/img | case | vs baseline | GFLOP/img | "
                  "baseline GFLOP/s | progan_fast equiv. GFLOP/s |", "|---|---|---|---|---|---|---|---|---|"]
        for res in scale:
            info = steps[("train-step-scale", res)]
            cases = info["cases"]
            base = cases.get(BASELINE)
            others = [(n, c) for n, c in cases.items() if n != BASELINE]
            if base is None or not others:
                continue
            name, c = others[0]
            per_img = lambda case: case[key] / info["images"]  # noqa: E731
            flops = info.get("flops_per_image", 0)
            lines.append(f"| {res}x{res} | {_maps_at(info.get('config', {}), res)} | {per_img(base) * 1e3:.2f} | {per_img(c) * 1e3:.2f} | {name} | "
                         f"{base[key] / c[key]:.2f}x | {flops / 1e9:.2f} | {flops / per_img(base) / 1e9:.0f} | "
                         f"{flops / per_img(c) / 1e9:.0f} |")
        peaks = {k: v for k, v in steps[("train-step-scale", scale[0])].items() if k.endswith("_gflops")}
        if peaks:
            lines += ["", "Reference rates measured in the same run: " + ", ".join(
                f"{k.replace('_gflops', '').replace('_', ' ')} {v:.0f} GFLOP/s" for k, v in sorted(peaks.items()))]
    return lines, shortfalls


def _maps_at(config, resolution):
    """Feature maps of the last block at `resolution` under a train-step config (num_features of its stage)."""
    if "fmap_base" not in config:
        return "?"
    stage = resolution.bit_length() - 2
    return min(int(config["fmap_base"] / 2.0 ** stage), config.get("fmap_max", 512))


# ---- charts -------------------------------------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def chart_ops(cases, out_dir, stat):
    """Speedup of the progan_fast kernels over eager and over compile, and the roofline fractions."""
    rows = []
    for (op, direction, shape, layout), impls in sorted(cases.items()):
        for backend in [b for b in KERNEL_ORDER if b in impls]:
            k = impls[backend]
            e, c = impls.get("eager"), impls.get("compile")
            rows.append((f"{op} {direction}\n{shape} {layout} ({backend})",
                         e["median"] / k["median"] if e else 0, c["median"] / k["median"] if c else 0,
                         k["info"]["roofline_ms"] / 1e3 / k["median"],
                         k["info"].get("same_size_roofline_fraction", 0)))
    if not rows:
        return []
    plt = _plt()
    paths = []
    height = max(3, 0.32 * len(rows))
    for fname, title, series in (
            ("op_speedups.png", f"progan_fast kernel speedup ({stat})", ((1, "vs eager"), (2, "vs torch.compile"))),
            ("op_roofline.png", "fraction of the copy-bandwidth roofline", ((3, "DRAM copy"), (4, "same-size copy")))):
        fig, ax = plt.subplots(figsize=(9, height))
        ys = range(len(rows))
        for i, (col, label) in enumerate(series):
            ax.barh([y + 0.4 * i for y in ys], [r[col] for r in rows], height=0.4, label=label)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks([y + 0.2 for y in ys], [r[0] for r in rows], fontsize=6)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def chart_train_steps(steps, out_dir, stat):
    key = "median_s" if stat == "median" else "min_s"
    main = sorted(r for g, r in steps if g == "train-step")
    paths = []
    if main:
        plt = _plt()
        names = list(steps[("train-step", main[-1])]["cases"])
        for fname, title, value, ylabel in (
                ("train_step_images_per_s.png", f"train-step images/s ({stat})",
                 lambda info, c: info["images"] / c[key], "images/s"),
                ("train_step_saved_bytes.png", "bytes saved for backward per iteration",
                 lambda info, c: c.get("saved_bytes", 0) / 1e6, "MB")):
            fig, ax = plt.subplots(figsize=(10, 4.5))
            width = 0.8 / max(1, len(names))
            for i, name in enumerate(names):
                xs, ys = [], []
                for j, res in enumerate(main):
                    c = steps[("train-step", res)]["cases"].get(name)
                    if c is not None:
                        xs.append(j + i * width)
                        ys.append(value(steps[("train-step", res)], c))
                bars = ax.bar(xs, ys, width=width, label=name)
                if fname.startswith("train_step_images"):
                    ratios = [steps[("train-step", res)]["cases"][name].get(
                        "speedup_vs_baseline" if stat == "median" else "speedup_vs_baseline_min")
                        for res in main if name in steps[("train-step", res)]["cases"]]
                    ax.bar_label(bars, [f"{r:.2f}x" if r else "" for r in ratios], fontsize=6, rotation=90,
                                 padding=2)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(main))], [f"{r}x{r}" for r in main])
            ax.set_ylabel(ylabel)
            ax.margins(y=0.15)
            ax.set_title(title)
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            path = os.path.join(out_dir, fname)
            fig.savefig(path, dpi=90)
            plt.close(fig)
            paths.append(path)
    scale = sorted(r for g, r in steps if g == "train-step-scale")
    if scale:
        plt = _plt()
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        series = {}
        for res in scale:
            info = steps[("train-step-scale", res)]
            for name, c in info["cases"].items():
                label = BASELINE if name == BASELINE else "progan_fast (fastest float32 case)"
                series.setdefault(label, []).append((res, c[key] / info["images"] * 1e3,
                                                     info.get("flops_per_image", 0) / (c[key] / info["images"]) / 1e9))
        for label, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label)
        for a in (ax, ax2):
            a.set_xscale("log", base=2)
            a.set_xticks(scale, [f"{r}" for r in scale])
            a.set_xlabel("resolution")
            a.grid(alpha=0.3)
        ax.set_yscale("log")
        ax.set_ylabel(f"ms per image ({stat})")
        ax.set_title("train-step time per image")
        ax2.set_ylabel("GFLOP/s (baseline's conv+matmul FLOPs)")
        ax2.set_title("achieved rate")
        info0 = steps[("train-step-scale", scale[0])]
        for k, v in info0.items():
            if k.endswith("_gflops"):
                ax2.axhline(v, ls="--", lw=0.8, color="gray")
                ax2.text(scale[0], v, k.replace("_gflops", ""), fontsize=7, va="bottom")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, "train_step_scale.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _has_bf16(runs):
    for data in runs:
        info = data.get("machine_info", {}).get("progan_fast", {})
        isa = info.get("cpu", {}).get("isa", [])
        if info.get("device", "cpu") == "cpu" and ("avx512_bf16" in isa or "amx_bf16" in isa):
            return True
    return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="pytest-benchmark JSON file(s) (--benchmark-json)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="statistic compared (min: on a shared, loaded machine, the least disturbed round)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "report"),
                        help="directory for report.md and the charts (default: %(default)s)")
    parser.add_argument("--no-charts", action="store_true", help="Markdown only")
    args = parser.parse_args(argv)
    runs = _load_json(args.results)
    cases = load(runs, args.stat)
    throughput = load_throughput(runs, args.stat)
    steps = load_train_steps(runs, args.stat)
    patch_records = load_patch(runs)
    layers = load_layers(runs, args.stat)
    if not cases and not throughput and not steps and not patch_records and not layers:
        print("no timed progan_fast benchmark records in " + ", ".join(args.results) +
              " (a --benchmark-disable run records none)", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    lines = ["# progan_fast benchmark report", "", f"Runs: {len(runs)}; statistic: {args.stat}.", "",
             "Where they ran:"] + machine_lines(runs) + [""]
    charts = []
    shortfalls = []
    if steps:
        step_lines, step_short = render_train_steps(steps, args.stat, _has_bf16(runs))
        lines += ["## Training step against the unfused baseline", ""] + step_lines + [""]
        shortfalls += step_short
        if not args.no_charts:
            charts += chart_train_steps(steps, args.out, args.stat)
    if cases:
        op_lines, op_short = render_ops(cases, args.stat)
        lines += ["## Ops", ""] + op_lines + [""]
        shortfalls += op_short
        if not args.no_charts:
            charts += chart_ops(cases, args.out, args.stat)
    if throughput:
        lines += ["## Whole-pipeline groups without a target", ""] + render_throughput(throughput, args.stat) + [""]
    if layers:
        lines += ["## Whole layers, forward+backward (no roofline target)", ""] + render_layers(layers) + [""]
    if patch_records:
        patch_lines, patch_short = render_patch(patch_records)
        lines += ["## Other trainers with and without progan_fast.patch", "",
                  "Interleaved in one process; speedup = images/s ratio.", ""] + patch_lines + [""]
        shortfalls += patch_short
    if charts:
        lines += ["## Charts", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in charts] + [""]
    if shortfalls:
        lines += ["## Targets not met", ""] + [f"- {s}" for s in shortfalls]
    else:
        lines += ["All targets met."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"report: {os.path.join(args.out, 'report.md')}", file=sys.stderr)
    if shortfalls:
        print(f"{len(shortfalls)} target(s) missed:\n" + "\n".join(f"  {s}" for s in shortfalls), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
