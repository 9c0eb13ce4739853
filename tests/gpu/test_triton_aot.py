"""Every Triton kernel compiles ahead of time to a cubin for sm_80 and sm_90 without spilling to local memory (no
GPU needed). The compile runs in subprocesses without TRITON_INTERPRET (this test process has it set, which turns
the kernels into interpreted functions), one per target so the two cores work in parallel, each with a fresh
cache so nothing is reused."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from progan_fast.triton import aot, kernels  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAPABILITIES = (80, 90)


def test_every_triton_kernel_compiles_for_sm80_and_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = {}
    for cap in CAPABILITIES:
        cap_env = dict(env, TRITON_CACHE_DIR=str(tmp_path / f"cache{cap}"))
        procs[cap] = subprocess.Popen([sys.executable, "-m", "progan_fast.triton.aot", str(cap)], cwd=ROOT,
                                      env=cap_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    expected = [label for label, *_ in aot.cases()]
    # every kernel of every Triton module has at least one case (kernels are the module's `*_kernel` functions)
    every_kernel = {name for module in kernels.MODULES for name in vars(module) if name.endswith("_kernel")}
    assert {label.split("[")[0] + "_kernel" for label in expected} == every_kernel
    for cap, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"sm_{cap} AOT compile failed:\n{err}\n{out}"
        compiled = [line.split()[2].rstrip(":") for line in out.splitlines() if line.startswith(f"ok   sm_{cap} ")]
        assert sorted(compiled) == sorted(expected), out
