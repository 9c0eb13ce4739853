"""Markdown table of a benchmark run: `python -m benchmarks.report results.json [more.json ...]`.

Given several runs of the same suite (the machine is shared, so repeat and keep the best), each case keeps the
run with the lowest median per implementation; min and median are both shown for progan_fast. Targets
(CONTRACT section 7) are judged for forward+backward only:
  every shape: progan_fast no slower than torch.compile of the reference;
  S2/S3: >= 80 % of the copy-bandwidth roofline, and >= 1.5x compile where compile is below 55 % of the roofline.
Whole-pipeline groups (train-step, data-loader: records from common.measure_throughput) have no roofline target;
they are listed in a second table, images/s and speedups only. The patch group (other trainers' steps with and
without progan_fast.patch, timed interleaved) is listed in a third.
"""
import argparse
import json
import sys

from . import common

KERNEL_ORDER = ("cpu", "cuda", "triton")


def load(paths, stat="median"):
    """{(op, direction, shape, layout): {impl: record}}, keeping the lowest `stat` per implementation; the record's
    "median" field holds that statistic (median or min) and is what every ratio uses."""
    cases = {}
    meta = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        meta.append({"machine": data.get("machine_info", {}), "datetime": data.get("datetime", "?")})
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            if "op" not in info or not b.get("stats"):
                continue
            key = (info["op"], info["direction"], info["shape_name"], info["layout"])
            rec = {"median": b["stats"][stat], "min": b["stats"]["min"], "info": info}
            impls = cases.setdefault(key, {})
            if info["impl"] not in impls or rec["median"] < impls[info["impl"]]["median"]:
                impls[info["impl"]] = rec
    return cases, meta


def load_throughput(paths, stat="median"):
    """{(group, case): {impl: record}} of the measure_throughput records, keeping the lowest `stat` per
    implementation (the record's "median" field holds it)."""
    cases = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            if info.get("kind") != "throughput" or not b.get("stats"):
                continue
            rec = {"median": b["stats"][stat], "min": b["stats"]["min"], "info": info}
            impls = cases.setdefault((info["group"], info["case"]), {})
            if info["impl"] not in impls or rec["median"] < impls[info["impl"]]["median"]:
                impls[info["impl"]] = rec
    return cases


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
    return "\n".join(lines)


def load_patch(paths):
    """The patch group's records (kind "patch"), one per run and library: every run is listed, since each one's
    speedup is already a same-process, interleaved ratio."""
    records = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for b in data.get("benchmarks", []):
            info = b.get("extra_info", {})
            if info.get("kind") == "patch":
                records.append(info)
    return records


def render_patch(records):
    lines = ["| library | case | images / step | threads | library images/s | patched images/s | speedup (median) | "
             "speedup (min) | speedup (CPU time) | rounds | cpu |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for info in sorted(records, key=lambda i: (i["library"], i["threads"])):
        lines.append(f"| {info['library']} | {info['case']} | {info['images']} | {info['threads']} | "
                     f"{info['images_per_s_library']:.2f} | {info['images_per_s_patched']:.2f} | "
                     f"{info['speedup']:.2f}x | {info['speedup_min']:.2f}x | "
                     f"{info.get('speedup_cpu_time', float('nan')):.2f}x | {info['rounds']} | {info['cpu']} |")
    return "\n".join(lines)


def judge(shape_name, kernel, compile_rec):
    """(met, list of reasons it is not) for a forward+backward case."""
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
    else:
        reasons.append("no compile measurement")
    if shape_name in common.ROOFLINE_SHAPES and frac < common.TARGET_ROOFLINE_FRACTION:
        reasons.append(f"{frac:.0%} of roofline < {common.TARGET_ROOFLINE_FRACTION:.0%}")
    return not reasons, reasons


def render(cases, meta, stat="median"):
    ms = lambda rec: "n/a" if rec is None else f"{rec['median'] * 1e3:.3f}"  # noqa: E731
    lines = []
    infos = [r["info"] for impls in cases.values() for r in impls.values()]
    machine = meta[0]["machine"] if meta else {}
    cpu = machine.get("cpu", {})
    lines.append(f"Runs: {len(meta)} ({', '.join(m['datetime'] for m in meta)}); each case keeps its best {stat}. "
                 f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, {cpu.get('count', '?')} logical "
                 f"cores; torch {sorted({i.get('torch', '?') for i in infos})[0]}; "
                 f"{sorted({i['threads'] for i in infos})} threads; glibc malloc thresholds raised: "
                 f"{'yes' if all(i['malloc_tuned'] for i in infos) else 'no'}.")
    lines.append("")
    bws = sorted({r["info"]["copy_bandwidth_GBps"] for impls in cases.values() for r in impls.values()})
    if bws:
        lines.append(f"Copy bandwidth (large `copy_`, read + write): {', '.join(f'{b:.1f}' for b in bws)} GB/s "
                     f"(per run). Times are {'medians' if stat == 'median' else 'minima'} in ms over each run's rounds (best "
                     f"run kept); progan_fast also shows (min).")
        lines.append("")
    lines.append("| op | direction | shape | layout | eager ms | compile ms | progan_fast ms | backend "
                 "| vs eager | vs compile | % roofline | target met? |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    shortfalls = []
    order = {d: i for i, d in enumerate(common.DIRECTIONS)}
    shape_order = {s: i for i, s in enumerate(common.SHAPES)}
    for key in sorted(cases, key=lambda k: (k[0], order.get(k[1], 9), shape_order.get(k[2], 9), k[3])):
        op, direction, shape_name, layout = key
        impls = cases[key]
        eager, comp = impls.get("eager"), impls.get("compile")
        for backend in [b for b in KERNEL_ORDER if b in impls] or [None]:
            kernel = impls.get(backend) if backend else None
            row = [op, direction, shape_name, layout, ms(eager), ms(comp)]
            if kernel is None:
                lines.append("| " + " | ".join(row + ["n/a", "-", "-", "-", "-", "-"]) + " |")
                continue
            frac = kernel["info"]["roofline_ms"] / 1e3 / kernel["median"]
            vs_eager = f"{eager['median'] / kernel['median']:.2f}x" if eager else "n/a"
            vs_comp = f"{comp['median'] / kernel['median']:.2f}x" if comp else "n/a"
            if direction == "forward+backward":
                met, reasons = judge(shape_name, kernel, comp)
                verdict = "yes" if met else "NO: " + "; ".join(reasons)
                if not met:
                    shortfalls.append(f"- {op} {direction} {shape_name} {layout} ({backend}): {'; '.join(reasons)}")
            else:
                verdict = "(no target)"
            roof = f"{frac:.0%}" if shape_name in common.ROOFLINE_SHAPES else f"({frac:.0%}, in cache)"
            lines.append("| " + " | ".join(row + [f"{kernel['median'] * 1e3:.3f} ({kernel['min'] * 1e3:.3f})",
                                                  backend, vs_eager, vs_comp, roof, verdict]) + " |")
    lines.append("")
    if shortfalls:
        lines.append("Targets not met:")
        lines.extend(shortfalls)
    else:
        lines.append("All forward+backward targets met.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="pytest-benchmark JSON file(s) (--benchmark-json)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="statistic compared (min: on a shared, loaded machine, the least disturbed round)")
    args = parser.parse_args(argv)
    cases, meta = load(args.results, args.stat)
    throughput = load_throughput(args.results, args.stat)
    patch_records = load_patch(args.results)
    if not cases and not throughput and not patch_records:
        print("no progan_fast benchmark records in " + ", ".join(args.results), file=sys.stderr)
        return 1
    if cases:
        print(render(cases, meta, args.stat))
    if throughput:
        if cases:
            print()
        print(f"Whole-pipeline throughput (no roofline target; each case keeps its best {args.stat} over "
              f"{len(meta)} run(s)):")
        print()
        print(render_throughput(throughput, args.stat))
    if patch_records:
        if cases or throughput:
            print()
        print("Other trainers with and without progan_fast.patch (interleaved in one process; speedup = images/s "
              "ratio):")
        print()
        print(render_patch(patch_records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
