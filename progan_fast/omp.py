"""OpenMP's wait policy for the command-line programs that train on the CPU (`progan-fast train`, the demo).

libgomp's default lets a worker thread spin for a while at every barrier before it sleeps. Training small networks
runs thousands of short parallel regions per second, and when another process wants the same cores the spinning
workers take their time slices: throughput drops many times over (measured: benchmarks/omp_wait_policy.py).
OMP_WAIT_POLICY=PASSIVE makes waiting threads sleep at once. libgomp reads the variable once, when torch loads it,
so the programs re-execute themselves with it set; a policy the user set is kept, and GPU runs are left alone.
"""
import os
import sys

import torch


def wants_passive_wait(device):
    """Whether a run on `device` (None, "auto", "cpu", "cuda:N", ...) should re-execute with a passive policy."""
    if os.environ.get("OMP_WAIT_POLICY"):
        return False
    if device in (None, "auto"):
        return not torch.cuda.is_available()
    return str(device).startswith("cpu")


def reexec_with_passive_wait(module, argv):
    """Replaces this process (same pid, so torchrun and job schedulers keep tracking it) with the same command
    line and OMP_WAIT_POLICY=PASSIVE. `module` and `argv` rebuild the command where sys.orig_argv is missing."""
    command = [sys.executable] + (sys.orig_argv[1:] if hasattr(sys, "orig_argv") else ["-m", module] + list(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
