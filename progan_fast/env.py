"""`python -m progan_fast.env`: versions, compiled backends, and the backend each op resolves to."""
import importlib.util
import platform

import torch

from . import backends


def report():
    lines = [f"python       {platform.python_version()} ({platform.machine()})",
             f"torch        {torch.__version__} (CUDA {torch.version.cuda or 'none'})"]
    triton_version = "not installed"
    if importlib.util.find_spec("triton") is not None:
        import triton
        triton_version = triton.__version__
    lines.append(f"triton       {triton_version}")
    lines.append(f"GPU          {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none visible'}")
    lines.append(f"forced       {backends.get_backend() or 'no (automatic choice)'}")
    if backends.available("cpu")[0]:
        variants = list(torch.ops.progan_fast._cpu_isa_variants())
        lines.append(f"CPU ISA      {variants[0]} (variants this CPU runs: {', '.join(variants)})")
    lines.append("")
    lines.append("backends:")
    for name in backends.BACKENDS:
        ok, reason = backends.available(name)
        lines.append(f"  {name:<10} {'available' if ok else 'unavailable: ' + reason}")
    lines.append("")
    rows = [("op", "CPU tensors", "CUDA tensors")] + list(backends.describe())
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for op, cpu, cuda in rows:
        lines.append(f"  {op:<{width[0]}}  {cpu:<{width[1]}}  {cuda}")
    return "\n".join(lines)


def main():
    print(report())


if __name__ == "__main__":
    main()
