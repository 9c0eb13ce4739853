"""Ahead-of-time compiles of the Triton kernels for GPU targets, without a GPU: every kernel, specialized the way
the runtime launches it for representative shapes, must compile to a cubin for sm_80 and sm_90 that uses no
local memory (no register spills).

    python -m progan_fast.triton.aot 80 90     # prints one line per compiled kernel, exits 1 on any failure

Must run with TRITON_INTERPRET unset: under the interpreter the kernels are not JIT functions to compile.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch

_POINTER_TYPES = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def _specialize(kernel, pointers, scalars, meta):
    """(signature, constexprs, attrs) as the runtime builds them: int arguments equal to 1 become constants,
    pointers are assumed 16-byte aligned (torch allocations are)."""
    import triton.language as tl  # noqa: F401  (the names below are Triton type strings)

    signature, constexprs, attrs = {}, {}, {}
    for name, ty in pointers.items():
        signature[name] = ty
        attrs[(kernel.arg_names.index(name),)] = [["tt.divisibility", 16]]
    for name, value in scalars.items():
        if isinstance(value, float):
            signature[name] = "fp32"
        elif value == 1:
            signature[name] = "constexpr"
            constexprs[name] = 1
        else:
            signature[name] = "i32"
    for name, value in meta.items():
        signature[name] = "constexpr"
        constexprs[name] = value
    return signature, constexprs, attrs


def pixel_norm_cases():
    """(label, kernel, signature, constexprs, attrs) for pixel norm: both kernels, every dtype, rows and planes,
    single- and two-pass."""
    from . import pixel_norm as pn

    shapes = [((16, 256, 32, 32), torch.contiguous_format),  # planes, one pass
              ((16, 512, 8, 8), torch.contiguous_format),    # planes, two passes over the channels
              ((16, 256, 32, 32), torch.channels_last),      # rows, one pass
              ((4, 8192), None)]                              # rows wider than a tile: two passes
    cases = []
    for shape, memory_format in shapes:
        x = torch.empty(shape, device="meta")
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        _, args, meta, _ = pn.geometry(x, 1)
        for dtype, ptr in _POINTER_TYPES.items():
            r_ptr = _POINTER_TYPES[pn.stat_dtype(dtype)]
            layout = "rows" if args["stride_c"] == 1 else "planes"
            passes = "one-pass" if meta["SINGLE_PASS"] else "two-pass"
            label = f"{'x'.join(map(str, shape))}-{layout}-{passes}-{ptr[1:]}"
            cases.append((f"pixel_norm_forward[{label}]", pn.pixel_norm_forward_kernel,
                          *_specialize(pn.pixel_norm_forward_kernel, {"x_ptr": ptr, "y_ptr": ptr, "r_ptr": r_ptr},
                                       dict(args, eps_hi=1e-8, eps_lo=0.0), meta)))
            cases.append((f"pixel_norm_backward[{label}]", pn.pixel_norm_backward_kernel,
                          *_specialize(pn.pixel_norm_backward_kernel,
                                       {"dy_ptr": ptr, "x_ptr": ptr, "r_ptr": r_ptr, "dx_ptr": ptr}, args, meta)))
    return cases


def compile_case(case, capability):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import pixel_norm as pn

    label, kernel, signature, constexprs, attrs = case
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options={"num_warps": pn.NUM_WARPS})
    cubin = compiled.asm.get("cubin", b"")
    if not cubin:
        raise RuntimeError(f"{label}: no cubin for sm_{capability}")
    usage = _resource_usage(cubin)
    if "LOCAL" not in usage or "STACK" not in usage:
        raise RuntimeError(f"{label}: cuobjdump reported no resource usage for sm_{capability}")
    if usage["LOCAL"] or usage["STACK"]:
        raise RuntimeError(f"{label}: spills to local memory on sm_{capability}: {usage}")
    return len(cubin), usage.get("REG")


def _resource_usage(cubin):
    """{'REG': n, 'STACK': bytes, 'LOCAL': bytes, ...} from the cuobjdump that ships with Triton."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    return {key: int(value) for key, value in re.findall(r"\b([A-Z]+)(?:\[\d+\])?:(\d+)", out)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capabilities", nargs="+", type=int, help="compute capabilities, e.g. 80 90")
    opts = parser.parse_args(argv)
    from triton.runtime.jit import JITFunction

    failures = 0
    for case in pixel_norm_cases():
        if not isinstance(case[1], JITFunction):
            print("aot: the kernels are interpreted (TRITON_INTERPRET is set); unset it to compile", file=sys.stderr)
            return 2
        for capability in opts.capabilities:
            try:
                size, registers = compile_case(case, capability)
            except Exception as e:  # report every kernel that fails, not only the first
                failures += 1
                print(f"FAIL sm_{capability} {case[0]}: {type(e).__name__}: {e}", file=sys.stderr)
            else:
                print(f"ok   sm_{capability} {case[0]}: cubin {size} bytes, {registers} registers, no local memory")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
