"""The CPU kernels' ISA variants (csrc/cpu/isa.h): the load-time choice matches the CPU, and the test-only
control that check_parity uses to run every op's parity checks under each variant does what it says."""
import platform

import pytest
import torch

from progan_fast import reference
from progan_fast.ops import pixel_norm

from .parity import CPU_ISA_VARIANTS, assert_close, cpu_isa

pytestmark = pytest.mark.skipif(not CPU_ISA_VARIANTS, reason="the CPU kernels are not built")

ALL_VARIANTS = ["x86-64-v4", "x86-64-v3", "baseline"]


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        return next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()


def test_variants_are_those_this_cpu_runs_best_first():
    assert CPU_ISA_VARIANTS == ALL_VARIANTS[ALL_VARIANTS.index(CPU_ISA_VARIANTS[0]):]
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return
    flags = set(_cpu_flags())
    expected = ("x86-64-v4" if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags
                else "x86-64-v3" if {"avx2", "fma", "f16c", "bmi2", "movbe"} <= flags else "baseline")
    assert CPU_ISA_VARIANTS[0] == expected


def test_forcing_a_variant_this_cpu_cannot_run_is_refused():
    with pytest.raises(RuntimeError, match="variant must be one this CPU runs .*got 'avx9'"):
        torch.ops.progan_fast._force_cpu_isa("avx9")
    with cpu_isa(CPU_ISA_VARIANTS[0]) as ran:  # the refused call changed nothing
        pixel_norm(torch.randn(2, 8, 4, 4))
        assert ran() == [CPU_ISA_VARIANTS[0]]


@pytest.mark.parametrize("variant", CPU_ISA_VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_forced_variant_is_the_one_that_runs(variant, dtype):
    x = torch.randn(2, 32, 8, 8, dtype=dtype)
    with cpu_isa(variant) as ran:
        assert ran() == []
        y = pixel_norm(x)
        assert ran() == [variant]
    assert_close(y, reference.pixel_norm(x.double()), dtype)


def test_load_time_choice_is_restored():
    with cpu_isa(CPU_ISA_VARIANTS[-1]):
        pass
    with cpu_isa(CPU_ISA_VARIANTS[0]) as ran:
        pixel_norm(torch.randn(2, 8, 4, 4))
        assert ran() == [CPU_ISA_VARIANTS[0]]
