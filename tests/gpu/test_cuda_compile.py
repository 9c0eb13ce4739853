"""Every CUDA source compiles for sm_80 and sm_90 with no register spills, stays free of ATen (so it compiles in
seconds), and a CUDA build of the extension registers the CUDA kernels."""
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess

import pytest
import torch

from progan_fast import _library, backends

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NVCC = "/usr/local/cuda/bin/nvcc"
CU_FILES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
ARCHS = ("sm_80", "sm_90")
# The flags setup.py's CUDA build passes to nvcc (torch adds the __CUDA_NO_HALF* defines to every extension).
NVCC_FLAGS = ["-std=c++20", "-O3", "--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__",
              "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
              "-I" + os.path.join(ROOT, "csrc")]


def test_there_are_cuda_sources():
    assert CU_FILES, "csrc/cuda/*.cu is empty"


@pytest.mark.parametrize("path", CU_FILES, ids=os.path.basename)
def test_cu_files_do_not_include_aten_or_torch(path):
    with open(path) as f:
        includes = re.findall(r'#\s*include\s*[<"]([^>"]+)[>"]', f.read())
    heavy = [inc for inc in includes if inc.startswith(("ATen/", "torch/", "c10/"))]
    assert not heavy, f"{os.path.basename(path)} includes {heavy}: keep ATen in the host-side .cpp"


def _ptxas_report(path, arch, out_dir):
    cubin = os.path.join(out_dir, f"{os.path.basename(path)}.{arch}.cubin")
    cmd = [NVCC, "-cubin", f"-arch={arch}", "-Xptxas", "-v", *NVCC_FLAGS, path, "-o", cubin]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, os.path.exists(cubin)


def _spills(report):
    """{kernel: (spill store bytes, spill load bytes)} from ptxas -v output."""
    kernels = {}
    current = None
    for line in report.splitlines():
        entry = re.search(r"Compiling entry function '([^']+)'", line)
        if entry:
            current = entry.group(1)
            continue
        spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if spill and current is not None:
            kernels[current] = (int(spill.group(1)), int(spill.group(2)))
            current = None
    return kernels


@pytest.mark.skipif(not os.path.exists(NVCC), reason=f"{NVCC} is absent: no CUDA toolkit to compile with")
def test_every_cu_file_compiles_for_sm80_and_sm90_without_spills(tmp_path):
    jobs = [(path, arch) for path in CU_FILES for arch in ARCHS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: _ptxas_report(*job, str(tmp_path)), jobs))
    problems = []
    for (path, arch), (rc, report, has_cubin) in zip(jobs, results):
        name = f"{os.path.basename(path)} [{arch}]"
        if rc != 0 or not has_cubin:
            problems.append(f"{name}: nvcc failed:\n{report}")
            continue
        kernels = _spills(report)
        if not kernels:
            problems.append(f"{name}: ptxas reported no kernels:\n{report}")
        for kernel, (stores, loads) in kernels.items():
            if stores or loads:
                problems.append(f"{name}: {kernel} spills {stores} bytes stored, {loads} bytes loaded")
    assert not problems, "\n".join(problems)


def _includes(path):
    with open(path) as f:
        return re.findall(r'#\s*include\s*"([^"]+)"', f.read())


def _built_on_vec(path):
    """Whether a .cu file's kernels are built on csrc/ops/vec.h (through the op headers it includes)."""
    headers = [os.path.join(ROOT, "csrc", inc) for inc in _includes(path) if inc.startswith("ops/")]
    return any("ops/vec.h" in _includes(h) for h in headers)


@pytest.mark.skipif(not os.path.exists(NVCC), reason=f"{NVCC} is absent: no CUDA toolkit to compile with")
@pytest.mark.parametrize("path", [p for p in CU_FILES if _built_on_vec(p)], ids=os.path.basename)
def test_vectorised_kernels_make_128_bit_accesses_through_restrict_pointers(path, tmp_path):
    """Kernels built on csrc/ops/vec.h move 16 bytes per load and per store where their tensors allow (the .v4/.v2
    forms in PTX), and every load takes the read-only path (ld.global.nc: the tensors reach the loops as
    __restrict__ parameters, so no load waits for an earlier store)."""
    ptx = tmp_path / "kernels.ptx"
    subprocess.run([NVCC, "-ptx", "-arch=sm_90", *NVCC_FLAGS, path, "-o", str(ptx)], check=True, capture_output=True,
                   timeout=600)
    accesses = re.findall(r"\b(ld|st)\.global(\.nc)?(\.v[24])?\.\w+", ptx.read_text())
    assert any(op == "ld" and vector for op, _, vector in accesses), "no 128-bit loads"
    assert any(op == "st" and vector for op, _, vector in accesses), "no 128-bit stores"
    assert all(nc for op, nc, _ in accesses if op == "ld"), "loads outside the read-only path"


def _ptx_entries(path, tmp_path):
    """[(demangled kernel name, PTX body)] of a .cu file compiled for sm_90."""
    ptx = tmp_path / (os.path.basename(path) + ".ptx")
    subprocess.run([NVCC, "-ptx", "-arch=sm_90", *NVCC_FLAGS, path, "-o", str(ptx)], check=True, capture_output=True,
                   timeout=600)
    entries = re.split(r"^\.visible \.entry ", ptx.read_text(), flags=re.M)[1:]
    names = subprocess.run(["c++filt"], input="\n".join(e.split("(", 1)[0] for e in entries), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    return list(zip(names, entries))


def _store_bits(body):
    """Bits moved by each global store of a PTX body (st.global.v4.u32: 128)."""
    bits = []
    for lanes, width in re.findall(r"\bst\.global(?:\.\w+)*?(?:\.v([24]))?\.[bfsu](8|16|32|64)\b", body):
        bits.append(int(lanes or 1) * int(width))
    return bits


# Elementwise kernels whose second template argument is the elements per access N: every store of an
# instantiation with N > 1 must be one 128-bit vector (nvcc splits a vector's copy into narrower stores where it
# cannot see that the offset is a multiple of 16 bytes).
BLEND_KERNELS = {"fade_reals.cu": "fade_reals_cuda::Kernel<", "upsample_blend.cu": "upsample_blend_cuda::ForwardKernel<"}


@pytest.mark.skipif(not os.path.exists(NVCC) or shutil.which("c++filt") is None,
                    reason=f"{NVCC} or c++filt is absent: no CUDA toolkit to compile with")
@pytest.mark.parametrize("cu_file", sorted(BLEND_KERNELS))
def test_blend_vector_kernels_store_only_128_bit_vectors(cu_file, tmp_path):
    kernel = BLEND_KERNELS[cu_file]
    vector_kernels = 0
    for name, body in _ptx_entries(os.path.join(ROOT, "csrc", "cuda", cu_file), tmp_path):
        if kernel not in name:
            continue
        start = name.index(kernel) + len(kernel)
        if int(name[start:name.index(">", start)].split(", ")[1]) == 1:
            continue
        vector_kernels += 1
        bits = _store_bits(body)
        assert bits and all(b == 128 for b in bits), f"{name}: stores of {bits} bits"
    assert vector_kernels == 8  # float32, float64, float16, bfloat16 x two units


@pytest.mark.skipif(not os.path.exists(NVCC) or shutil.which("c++filt") is None,
                    reason=f"{NVCC} or c++filt is absent: no CUDA toolkit to compile with")
def test_fade_from_rgb_power_of_two_kernels_divide_nothing(tmp_path):
    """fade_from_rgb's kernels instantiated for power-of-two divisors (kPow2: H * W, W, C and the chunks per sample;
    every ProGAN map and channel count) index with shifts and masks: no integer div or rem in their PTX, where every
    other instantiation divides."""
    ptx = tmp_path / "fade_from_rgb.ptx"
    subprocess.run([NVCC, "-ptx", "-arch=sm_90", *NVCC_FLAGS, os.path.join(ROOT, "csrc", "cuda", "fade_from_rgb.cu"),
                    "-o", str(ptx)], check=True, capture_output=True, timeout=600)
    entries = re.split(r"^\.visible \.entry ", ptx.read_text(), flags=re.M)[1:]
    names = subprocess.run(["c++filt"], input="\n".join(e.split("(", 1)[0] for e in entries), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    divides = {True: [], False: []}
    for name, body in zip(names, entries):
        start = name.index("Kernel<") + len("Kernel<")
        pow2 = name[start:name.index(">", start)].split(", ")[-2] == "true"  # <scalar_t, P[, Q], kPow2, kFew>
        divides[pow2].append(re.search(r"\b(div|rem)\.[su](32|64)\b", body) is not None)
    assert divides[True] and not any(divides[True])
    assert divides[False] and all(divides[False])


def _built_with_cuda():
    if not backends.available("cpu")[0]:
        return False
    return "cuda=1" in torch.ops.progan_fast._build_info()


def _emulated_raw_ops():
    """Raw ops with an emulated kernel: the same device code must be registered as the CUDA family's kernel."""
    return [name for name in _library.kernel_ops()
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"progan_fast_emulated::{name}", "CPU")]


def test_emulated_family_has_kernels():
    assert backends.available("emulated")[0]
    assert "pixel_norm_forward" in _emulated_raw_ops()


@pytest.mark.skipif(not _built_with_cuda(), reason="progan_fast._C was built without CUDA kernels")
@pytest.mark.parametrize("name", _emulated_raw_ops())
def test_cuda_build_registers_cuda_kernels(name):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"progan_fast::{name}", "CUDA")
