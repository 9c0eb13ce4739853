"""Builds progan_fast._C: the CPU kernels always, the CUDA kernels when torch has CUDA and a toolkit is found.

Environment knobs:
  PROGAN_FAST_NO_CUDA=1     build the CPU kernels only
  CUDA_HOME                 CUDA toolkit (default: /usr/local/cuda when it exists)
  TORCH_CUDA_ARCH_LIST      GPU architectures (default: "8.0;9.0")
  PROGAN_FAST_SANITIZE=1    CPU build with AddressSanitizer + UndefinedBehaviorSanitizer (make sanitize)
  PROGAN_FAST_NO_EXTENSION=1  package only (the Makefile builds the extension in place, incrementally)
  MAX_JOBS                  parallel compile jobs for ninja (default: all cores)
"""
import glob
import os

# torch.utils.cpp_extension resolves CUDA_HOME when it is imported, and the `nvcc` on PATH may be a wrapper
# that makes it guess the wrong directory, so the default must be in the environment before that import.
if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    if os.environ.get("PROGAN_FAST_NO_CUDA", "0") not in ("", "0"):
        return False
    if torch.version.cuda is None:
        return False  # CPU-only torch: cpp_extension cannot build a CUDAExtension against it
    return cpp_extension.CUDA_HOME is not None


def sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def extension():
    with_cuda = want_cuda()
    sanitize = os.environ.get("PROGAN_FAST_SANITIZE", "0") not in ("", "0")
    # Portable baseline only: hot loops are compiled per ISA variant (see csrc/cpu/isa.h),
    # so one wheel runs on any x86-64 and still uses AVX2/AVX-512 where the CPU has them.
    # -fno-wrapv: setuptools passes Python's own CFLAGS, -fwrapv among them, and wrapping signed arithmetic cost the
    # minibatch stddev kernels 4-10 % (forward) and 3 % (backward) at D's (N, 512, 4, 4) on a 2-core Zen 4.
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-wrapv",
           "-DPROGAN_FAST_TORCH_VERSION=\"%s\"" % torch.__version__]
    link = ["-fopenmp"]
    if sanitize:
        cxx = ["-O1", "-g", "-std=c++20", "-fopenmp", "-fno-omit-frame-pointer",
               "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-DPROGAN_FAST_TORCH_VERSION=\"%s\"" % torch.__version__]
        link += ["-fsanitize=address,undefined"]
    srcs = (sources("csrc/*.cpp") + sources("csrc/cpu/*.cpp") + sources("csrc/autograd/*.cpp") +
            sources("csrc/emulated/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc")]
    # headers too, so an in-place rebuild notices a changed header (ninja then recompiles only its dependents)
    depends = sources("csrc/**/*.h") + sources("csrc/**/*.cuh")
    if with_cuda:
        srcs += sources("csrc/cuda/*.cpp") + sources("csrc/cuda/*.cu")
        # --fmad=false: no a * b + c contracted into one FMA behind the code's back; the kernels write hd::mul_add
        # where they want one, so the emulated family (compiled without contraction) computes the GPU's bits.
        nvcc = ["-O3", "-std=c++20", "-lineinfo", "--expt-relaxed-constexpr", "--fmad=false"]
        return cpp_extension.CUDAExtension(
            "progan_fast._C", srcs, include_dirs=include_dirs,
            define_macros=[("PROGAN_FAST_WITH_CUDA", "1")], depends=depends,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)
    return cpp_extension.CppExtension(
        "progan_fast._C", srcs, include_dirs=include_dirs, depends=depends,
        extra_compile_args={"cxx": cxx}, extra_link_args=link)


class BuildExtension(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    """Records the torch version next to the built library, so a stale build is refused before it is opened."""

    def run(self):
        super().run()
        for ext in self.extensions:
            target_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(target_dir, exist_ok=True)
            with open(os.path.join(target_dir, "_C.build_info"), "w") as f:
                f.write(f"torch={torch.__version__};cuda={int(want_cuda())}")


setup(
    name="progan_fast",
    version="0.1.0",
    description="Fused CPU/CUDA/Triton kernels and a progressive trainer for ProGAN",
    packages=find_packages(include=["progan_fast", "progan_fast.*"]),
    package_data={"progan_fast": ["_C.build_info", "data/*"]},
    python_requires=">=3.9",
    install_requires=["torch", "numpy", "pillow", "tqdm"],
    extras_require={"test": ["pytest", "pytest-benchmark", "hypothesis", "expecttest"],
                    "train": ["tensorboard", "matplotlib"]},
    ext_modules=[] if os.environ.get("PROGAN_FAST_NO_EXTENSION", "0") not in ("", "0") else [extension()],
    cmdclass={"build_ext": BuildExtension},
    entry_points={"console_scripts": ["progan-fast=progan_fast.cli:entry"]},
    zip_safe=False,
)
