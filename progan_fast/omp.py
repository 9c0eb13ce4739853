"""OpenMP waiting for the command-line programs that train on the CPU (`progan-fast train`, the demo).

Training small networks runs thousands of short parallel regions per second; between them libgomp's worker threads
wait. By default they spin for a long while (GOMP_SPINCOUNT 300000) before sleeping, and when another process wants
the same cores the spinning workers take its time slices: throughput drops many times over. Sleeping at once
(OMP_WAIT_POLICY=PASSIVE) fixes that but costs 20-55 % on an idle machine, because every region then wakes its
workers through the kernel. A short spin (GOMP_SPINCOUNT=1000, a few microseconds) keeps 80-99 % of the default's
idle speed and is as good as passive waiting under contention (benchmarks/omp_wait_policy.py; measured in the
README). libgomp reads these variables once, when torch loads it, so the programs re-execute
themselves with the spin count set; a policy or spin count the user set is kept, and GPU runs are left alone.
"""
import os
import sys

import torch

SPIN_COUNT = 1000
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def wants_short_spin(device):
    """Whether a run on `device` (None, "auto", "cpu", "cuda:N", ...) should re-execute with a short spin."""
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    if device in (None, "auto"):
        return not torch.cuda.is_available()
    return str(device).startswith("cpu")


def reexec_with_short_spin(module, argv):
    """Replaces this process (same pid, so torchrun and job schedulers keep tracking it) with the same command
    line and GOMP_SPINCOUNT=SPIN_COUNT. `module` and `argv` rebuild the command where sys.orig_argv is missing."""
    command = [sys.executable] + (sys.orig_argv[1:] if hasattr(sys, "orig_argv") else ["-m", module] + list(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, dict(os.environ, GOMP_SPINCOUNT=str(SPIN_COUNT)))
