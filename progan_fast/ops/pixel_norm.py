"""pixel_norm: public function, fake (meta) functions and autograd for the registered kernels.

Kernel families, one pair of ops each (forward -> (y, rsqrt); backward -> dx):
  progan_fast::pixel_norm_{forward,backward}         C++: csrc/cpu/pixel_norm.cpp, csrc/cuda/pixel_norm.cu
  progan_fast_triton::pixel_norm_{forward,backward}  Triton: progan_fast/triton/pixel_norm.py
Saved for backward: x and one rsqrt per pixel. The backward op's own autograd (the double backward needed by
WGAN-GP) is written in differentiable torch ops, so first and second order are supported.
Fake (meta) functions are registered here for both families. Autograd: the C++ family registers its own in C++
(csrc/autograd/pixel_norm.cpp, no Python on the call path); the Triton family uses the Python one below, which
implements the same formulas.
"""
import torch

from .. import backends, reference
from . import _checks

OP = "pixel_norm"
backends.register_op(OP, ("cpu", "cuda", "triton"))


def pixel_norm(x, dim=1, eps=1e-8):
    """y = x * rsqrt(mean over `dim` of x^2 + eps); see progan_fast.reference.pixel_norm for the spec."""
    _checks.tensor("x", x)
    (x,) = _checks.autocast(x.device.type, x)
    if x.dim() < 2:
        raise ValueError(f"x must have at least 2 dimensions (batch and features); got shape {tuple(x.shape)}")
    dim = _checks.dim("dim", dim, x.dim())
    eps = _checks.finite_float("eps", eps, minimum=0.0)
    backend = backends.resolve(OP, x.device)
    if backend == "reference":
        return reference.pixel_norm(x, dim, eps)
    return forward_op(backend)(x, dim, eps)[0]


def forward_op(backend):
    if backend == "triton":
        from ..triton import pixel_norm as _  # noqa: F401  (registers progan_fast_triton::pixel_norm_*)
        return torch.ops.progan_fast_triton.pixel_norm_forward
    return torch.ops.progan_fast.pixel_norm_forward


# ---- layout rule shared by every kernel family (mirrors csrc/common/reduction_layout.h) ----

def output_memory_format(x, dim):
    """channels_last activations normalised over channels stay channels_last; everything else is contiguous."""
    if x.dim() == 4 and dim == 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def fake_forward(x, dim, eps):
    dim = dim % x.dim()
    y = torch.empty_like(x, memory_format=output_memory_format(x, dim))
    stat_shape = list(x.shape)
    stat_shape[dim] = 1
    return y, x.new_empty(stat_shape, dtype=stat_dtype(x.dtype))


def fake_backward(grad_y, x, rsqrt, dim):
    return torch.empty_like(x, memory_format=output_memory_format(x, dim % x.dim()))


def _forward_setup_context(ctx, inputs, output):
    x, dim, _ = inputs
    _, rsqrt = output
    ctx.mark_non_differentiable(rsqrt)
    ctx.save_for_backward(x, rsqrt)
    ctx.dim = dim


def _double_backward_setup_context(ctx, inputs, output):
    grad_y, x, rsqrt, dim = inputs
    ctx.save_for_backward(grad_y, x, rsqrt)
    ctx.dim = dim


def _double_backward(ctx, g):
    """Gradients of <g, dx> with dx = r*dy - x*r^3*mean(dy*x), r = rsqrt(mean(x^2)+eps), r depending on x."""
    dy, x, r = ctx.saved_tensors
    dim = ctx.dim
    out_dtype = x.dtype
    dy, x, g = (t.to(r.dtype) for t in (dy, x, g))
    a = (g * x).mean(dim, keepdim=True)
    b = (g * dy).mean(dim, keepdim=True)
    m = (dy * x).mean(dim, keepdim=True)
    r3 = r * r * r
    grad_dy = r * g - r3 * a * x
    grad_x = (3 * r3 * r * r * m * a - r3 * b) * x - r3 * a * dy - r3 * m * g
    return grad_dy.to(out_dtype), grad_x.to(out_dtype), None, None


def register_fake_family(namespace):
    """Fake registrations for `<namespace>::pixel_norm_{forward,backward}`."""
    torch.library.register_fake(f"{namespace}::pixel_norm_forward")(fake_forward)
    torch.library.register_fake(f"{namespace}::pixel_norm_backward")(fake_backward)


def register_kernel_family(namespace):
    """Fake and Python autograd registrations for `<namespace>::pixel_norm_{forward,backward}`."""
    forward_name = f"{namespace}::pixel_norm_forward"
    backward_name = f"{namespace}::pixel_norm_backward"
    backward_op = getattr(getattr(torch.ops, namespace), "pixel_norm_backward")

    def backward(ctx, grad_y, _grad_rsqrt):
        x, rsqrt = ctx.saved_tensors
        return backward_op(grad_y, x, rsqrt, ctx.dim), None, None

    register_fake_family(namespace)
    torch.library.register_autograd(forward_name, backward, setup_context=_forward_setup_context)
    torch.library.register_autograd(backward_name, _double_backward, setup_context=_double_backward_setup_context)


if backends.available("cpu")[0]:
    register_fake_family("progan_fast")  # autograd: csrc/autograd/pixel_norm.cpp
