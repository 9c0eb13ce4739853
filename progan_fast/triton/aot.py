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

POINTER_TYPES = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def cases():
    """Every kernel's AOT cases: each module of progan_fast/triton/kernels.py declares its own (`aot_cases()`),
    tuples (label, kernel, signature, constexprs, attrs, num_warps)."""
    from . import kernels

    return [case for module in kernels.MODULES for case in module.aot_cases()]


def specialize(kernel, pointers, scalars, meta):
    """(signature, constexprs, attrs) as the JIT builds them for a launch: int arguments equal to 1 become
    constants, ints divisible by 16 and pointers (torch allocations are 16-byte aligned) get the divisibility
    hint, so the compiled kernel is the one that runs."""
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
            if value % 16 == 0:
                attrs[(kernel.arg_names.index(name),)] = [["tt.divisibility", 16]]
    for name, value in meta.items():
        signature[name] = "constexpr"
        constexprs[name] = value
    return signature, constexprs, attrs


def compile_case(case, capability):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    label, kernel, signature, constexprs, attrs, num_warps = case
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps})
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
    for case in cases():
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
