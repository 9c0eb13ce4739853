"""OpenMP waiting under CPU contention: training throughput of libgomp's default against OMP_WAIT_POLICY=PASSIVE
and a short spin, GOMP_SPINCOUNT=1000 (what `progan-fast train` and the demo re-execute themselves with on the CPU;
progan_fast/omp.py), on an otherwise idle machine and with busy processes competing for the same cores.

    python -m benchmarks.omp_wait_policy [--cores 0,1] [--rounds 3] [--iterations 12] [--hogs 2] [--resolution 16]
                                         [--policies default,PASSIVE,spin1000] [--loads idle,contended]

A policy is an OMP_WAIT_POLICY value, `default` (nothing set) or `spin<N>` (GOMP_SPINCOUNT=N).

Each measurement is a fresh process (libgomp reads the policy once, at load) that trains the demo's networks at
--resolution (minibatch 16, on the embedded dataset) for two warm-up iterations, then times --iterations more. The
policies alternate within every round, so both see the same background load; the report gives the median images/s
of each case and its ratio to the first policy. --cores pins the trainers and the competing processes to those cores
(taskset), which makes a many-core machine behave like the 2-core one the demo targets.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
import torch
from progan_fast.demo import DEMO
from progan_fast.train.config import TrainConfig
from progan_fast.train.loop import Trainer
threads, iterations, resolution = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
config = TrainConfig(**dict(DEMO, resolution=resolution, start_resolution=resolution, total_kimg=1e6))
trainer = Trainer(config, None, device="cpu", progress=False, log=lambda *a, **k: None)
for _ in range(2):
    trainer.iteration()
start, nimg = time.perf_counter(), trainer.cur_nimg
for _ in range(iterations):
    trainer.iteration()
print(json.dumps({"img_per_s": (trainer.cur_nimg - nimg) / (time.perf_counter() - start)}))
"""

HOG = "while True: pass"


def _pinned(command, cores):
    return (["taskset", "-c", cores] if cores else []) + command


def measure(policy, cores, threads, iterations, resolution):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[len("spin"):]
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    command = [sys.executable, "-c", WORKER, str(threads), str(iterations), str(resolution)]
    out = subprocess.run(_pinned(command, cores), env=env, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])["img_per_s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", help="pin everything to these cores (taskset list, e.g. 0,1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the trainer (2)")
    parser.add_argument("--hogs", type=int, default=2, help="busy processes in the contended case (2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=16, help="4, 8, 16 or 32 (16)")
    parser.add_argument("--policies", default="default,PASSIVE,spin1000",
                        help="comma-separated OMP_WAIT_POLICY values, spin<N> for GOMP_SPINCOUNT=N; 'default' sets "
                             "neither (default,PASSIVE,spin1000)")
    parser.add_argument("--loads", default="idle,contended", help="idle and/or contended (idle,contended)")
    args = parser.parse_args(argv)
    policies = args.policies.split(",")
    loads = args.loads.split(",")

    results = {}
    for contended in [load == "contended" for load in loads]:
        hogs = [subprocess.Popen(_pinned([sys.executable, "-c", HOG], args.cores))
                for _ in range(args.hogs if contended else 0)]
        try:
            for _ in range(args.rounds):
                for policy in policies:
                    key = ("contended" if contended else "idle", policy)
                    value = measure(policy, args.cores, args.threads, args.iterations, args.resolution)
                    results.setdefault(key, []).append(value)
                    print(f"  {key[0]:<10} {policy:<8} {value:7.1f} img/s", flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    print(f"{args.resolution}x{args.resolution}, cores {args.cores or 'all'}, {args.threads} torch threads, "
          f"{args.hogs} competing busy processes, {args.rounds} rounds of {args.iterations} iterations "
          "(img/s, median [all])")
    for load in loads:
        default = statistics.median(results[(load, policies[0])])
        cells = [f"{policy} {statistics.median(results[(load, policy)]):7.1f} "
                 f"{[round(v, 1) for v in results[(load, policy)]]}" for policy in policies]
        ratios = [f"{policy}/{policies[0]} {statistics.median(results[(load, policy)]) / default:.2f}x"
                  for policy in policies[1:]]
        print(f"  {load:<10} " + "   ".join(cells + ratios))


if __name__ == "__main__":
    main()
