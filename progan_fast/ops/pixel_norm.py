"""pixel_norm: y = x * rsqrt(mean over `dim` of x^2 + eps) — public function, raw ops, fakes and autograd.

Raw ops (defined in every kernel family's namespace, see _library.py):
  pixel_norm_forward(x, dim, eps) -> (y, rsqrt)         rsqrt: one value per reduced vector, in the math dtype
  pixel_norm_backward(grad_y, x, rsqrt, dim, eps) -> dx  itself differentiable (WGAN-GP's double backward); eps is
                                                         read with one element per vector, where dx = eps r^3 dy
  pixel_norm_double_backward(...)                        the backward's gradients, in torch ops (every order)
Kernels: csrc/cpu/pixel_norm.cpp, csrc/ops/pixel_norm.h (CUDA device code, also run by the emulated family),
progan_fast/triton/pixel_norm.py. Saved for backward: x and one rsqrt per pixel.
The cpu/cuda family registers the same autograd in C++ (csrc/autograd/pixel_norm.cpp: it halves the per-call
overhead at in-cache shapes); its double backward calls the composite op below, so the formula exists once.
"""
import torch

from .. import _layout, backends, reference
from .. import _library
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
    return _library.family_ops(backend).pixel_norm_forward(x, dim, eps)[0]


# ---- checks (the C++ kernels make the same: csrc/common/pixel_norm_operands.h) and fakes ----

def _check_dim(x, dim):
    if x.dim() < 1 or not -x.dim() <= dim < x.dim():
        raise IndexError(f"dim must be in [{-x.dim()}, {x.dim() - 1}] for x of shape {tuple(x.shape)}; got {dim}")
    return dim % x.dim()


def _stat_shape(x, dim):
    shape = list(x.shape)
    shape[dim] = 1
    return shape


def _check_forward(x, dim, eps):
    _check_dim(x, dim)


def _fake_forward(x, dim, eps):
    dim = dim % x.dim()
    y = torch.empty_like(x, memory_format=_layout.reduction_output_format(x, dim))
    return y, x.new_empty(_stat_shape(x, dim), dtype=_layout.stat_dtype(x.dtype))


def _check_double_backward(g, grad_y, x, rsqrt, dim, eps):
    """The backward's operands as the backward checks them, and g (the gradient of dx) placed, typed and shaped
    like x."""
    _check_backward(grad_y, x, rsqrt, dim, eps)
    _checks.placed_like("g", g, "x", x)


def _check_backward(grad_y, x, rsqrt, dim, eps):
    dim = _check_dim(x, dim)
    _checks.placed_like("grad_y", grad_y, "x", x)
    if rsqrt.device != x.device:
        raise RuntimeError(f"rsqrt must be on {x.device} like x; got {rsqrt.device}")
    if rsqrt.dtype != _layout.stat_dtype(x.dtype):
        raise TypeError(f"rsqrt must be {_layout.stat_dtype(x.dtype)} (the math dtype of {x.dtype}); got {rsqrt.dtype}")
    vectors = torch.Size(_stat_shape(x, dim)).numel()
    if rsqrt.numel() != vectors:
        raise RuntimeError(f"rsqrt must have one value per reduced vector ({vectors}); got {rsqrt.numel()}")


def _fake_backward(grad_y, x, rsqrt, dim, eps):
    return torch.empty_like(x, memory_format=_layout.reduction_output_format(x, dim % x.dim()))


# ---- autograd (Python; the cpu/cuda family has the same in C++) ----

def _save_forward(ctx, inputs, output):
    x, dim, eps = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, output[1])
    ctx.dim, ctx.eps = dim, eps


def _backward(ops, ctx, grad_y, _grad_rsqrt):
    x, rsqrt = ctx.saved_tensors
    return ops.pixel_norm_backward(grad_y, x, rsqrt, ctx.dim, ctx.eps), None, None


def _save_backward(ctx, inputs, output):
    grad_y, x, rsqrt, dim, eps = inputs
    ctx.save_for_backward(grad_y, x, rsqrt)
    ctx.dim, ctx.eps = dim, eps


def _double_backward(ops, ctx, g):
    grad_y, x, rsqrt = ctx.saved_tensors
    grad_grad_y, grad_x = ops.pixel_norm_double_backward(g, grad_y, x, rsqrt, ctx.dim, ctx.eps)
    return grad_grad_y, grad_x, None, None, None


def _double_backward_formula(g, grad_y, x, rsqrt, dim, eps):
    """Gradients of <g, dx> w.r.t. grad_y and x, with dx = r*dy - x*r^3*mean(dy*x) and r = rsqrt(mean(x^2) + eps).

    r is saved, but it depends on x: dr/dx = -r^3 x / C for any eps, so r is re-attached to x with exactly that
    derivative (its value stays the saved one). The result is then correct to every order, not only the second.

    With one element per vector (C = 1) every output is a multiple of 1 - r^2 x^2, a difference of nearly equal
    terms that float32 leaves as its rounding (2% errors at |x| ~ 0.1): that case takes the exact forms, with
    1 - r^2 x^2 = eps r^2, of the kernels' dx = eps r^3 dy (csrc/common/pixel_norm_math.h).
    """
    out_dtype = x.dtype
    dim = dim % x.dim()
    r = rsqrt.to(_layout.stat_dtype(x.dtype)).reshape(_stat_shape(x, dim))  # any shape of one value per vector
    dy, x, g = (t.to(r.dtype) for t in (grad_y, x, g))
    mean_sq = (x * x).mean(dim, keepdim=True)
    tracker = torch.rsqrt(mean_sq + (r.detach().pow(-2) - mean_sq).detach())  # value ~r, derivatives exactly r's
    r = r.detach() + (tracker - tracker.detach())
    r3 = r * r * r
    if x.shape[dim] == 1:
        eps_r2 = eps * r * r
        return (r * eps_r2 * g).to(out_dtype), (-3 * r3 * eps_r2 * x * dy * g).to(out_dtype)
    a = (g * x).mean(dim, keepdim=True)
    b = (g * dy).mean(dim, keepdim=True)
    m = (dy * x).mean(dim, keepdim=True)
    grad_dy = r * g - r3 * a * x
    grad_x = (3 * r3 * r * r * m * a - r3 * b) * x - r3 * a * dy - r3 * m * g
    return grad_dy.to(out_dtype), grad_x.to(out_dtype)


_library.define(
    _library.RawOp("pixel_norm_forward", "(Tensor x, int dim, float eps) -> (Tensor, Tensor)",
                   check=_check_forward, fake=_fake_forward,
                   backward=_backward, setup_context=_save_forward, cpp_autograd=("progan_fast",)),
    _library.RawOp("pixel_norm_backward", "(Tensor grad_y, Tensor x, Tensor rsqrt, int dim, float eps) -> Tensor",
                   check=_check_backward, fake=_fake_backward, backward=_double_backward, setup_context=_save_backward,
                   cpp_autograd=("progan_fast",)),
    _library.RawOp("pixel_norm_double_backward",
                   "(Tensor g, Tensor grad_y, Tensor x, Tensor rsqrt, int dim, float eps) -> (Tensor, Tensor)",
                   check=_check_double_backward, composite=_double_backward_formula),
)
