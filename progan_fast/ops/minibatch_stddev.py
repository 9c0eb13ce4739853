"""minibatch_stddev: append the group's mean feature stddev as F extra channels (D's 4x4 block).

Raw ops (defined in every kernel family's namespace, see _library.py); `params` is
(group_size, grouping, unbiased, eps, num_new_features), exactly the public arguments:
  minibatch_stddev_forward(x, *params) -> y                 N x (C+F) x H x W, x copied and the F maps written by
                                                            the same kernel (no torch.cat)
  minibatch_stddev_backward(grad_y, x, *params) -> dx       itself differentiable (WGAN-GP's double backward)
  minibatch_stddev_double_backward(g, grad_y, x, *params)   the backward's gradients, in torch ops (every order)
Kernels: csrc/cpu/minibatch_stddev.cpp, csrc/ops/minibatch_stddev.h (CUDA device code, also run by the emulated
family), progan_fast/triton/minibatch_stddev.py. Saved for backward: x alone. The backward needs the stddev at
every position of the group (not the averaged statistic), which it recomputes from x while it reads x anyway;
nothing computed by the forward is kept.
The cpu/cuda family registers the same autograd in C++ (csrc/autograd/minibatch_stddev.cpp); its double backward
calls the composite op below, so the formula exists once.
"""
import functools

import torch

from .. import _layout, _library, backends, reference
from . import _checks

OP = "minibatch_stddev"
backends.register_op(OP, ("cpu", "cuda", "triton"))
GROUPINGS = ("strided", "contiguous")


def minibatch_stddev(x, group_size=4, grouping="strided", unbiased=False, eps=1e-8, num_new_features=1):
    """N x C x H x W -> N x (C+F) x H x W with F = num_new_features. grouping="strided": TF official / pro-gan-pth
    (use unbiased=False); grouping="contiguous": pytorch_GAN_zoo (use unbiased=True); num_new_features > 1: NVlabs'
    later form (F must divide C). See progan_fast.reference.minibatch_stddev for the spec."""
    _checks.tensor("x", x, ndims=(4,))
    (x,) = _checks.autocast(x.device, x)
    group_size = _checks.positive_int("group_size", group_size)
    grouping = _checks.choice("grouping", grouping, GROUPINGS)
    unbiased = _checks.flag("unbiased", unbiased)
    eps = _checks.finite_float("eps", eps, minimum=0.0)
    num_new_features = _checks.positive_int("num_new_features", num_new_features)
    _check_shape(x, group_size, grouping, unbiased, num_new_features)
    backend = backends.resolve(OP, x.device)
    if backend == "reference":
        return reference.minibatch_stddev(x, group_size, grouping, unbiased, eps, num_new_features)
    return _forward_op(backend)(x, group_size, grouping, unbiased, eps, num_new_features)


@functools.cache
def _forward_op(backend):
    """The family's forward overload, looked up once (through torch.ops it costs ~0.4 us a call)."""
    return _library.family_ops(backend).minibatch_stddev_forward.default


def _check_shape(x, group_size, grouping, unbiased, num_new_features):
    """What the arguments must satisfy for x's shape (the C++ kernels check the same:
    csrc/common/minibatch_stddev_operands.h)."""
    n, c, _, _ = x.shape  # one torch.Size, not two
    if n == 0:
        raise ValueError(f"x has an empty batch (shape {tuple(x.shape)}); at least one sample is needed")
    if c % num_new_features:
        raise ValueError(f"num_new_features={num_new_features} must divide the {c} channels of x")
    if grouping == "strided" and n > group_size and n % group_size:
        raise ValueError(f"group_size={group_size} does not divide the batch of {n} samples; with grouping='strided' "
                         f"(TF official) the batch must be a multiple of group_size or at most group_size")
    if unbiased:  # only the unbiased variance needs the groups' size
        g, _, zero = _layout.minibatch_groups(n, group_size, grouping)
        if g == 1 and not zero:
            raise ValueError(f"unbiased=True needs groups of at least 2 samples; group_size={group_size} and a batch "
                             f"of {n} give groups of 1")


# ---- raw ops: checks (the C++ kernels make the same) and fakes ----

def _check_params(x, group_size, grouping, unbiased, eps, num_new_features):
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D; got a {x.dim()}-D tensor of shape {tuple(x.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1; got {group_size}")
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {', '.join(map(repr, GROUPINGS))}; got {grouping!r}")
    if num_new_features < 1:
        raise ValueError(f"num_new_features must be >= 1; got {num_new_features}")
    _check_shape(x, group_size, grouping, unbiased, num_new_features)


def _check_forward(x, *params):
    _check_params(x, *params)


def _output_shape(x, num_new_features):
    n, c, h, w = x.shape
    return (n, c + num_new_features, h, w)


def _fake_forward(x, *params):
    return torch.empty(_output_shape(x, params[-1]), dtype=x.dtype, device=x.device,
                       memory_format=_layout.memory_format(x))


def _check_double_backward(g, grad_y, x, *params):
    """The backward's operands as the backward checks them, and g (the gradient of dx) placed, typed and shaped
    like x."""
    _check_backward(grad_y, x, *params)
    _checks.placed_like("g", g, "x", x)


def _check_backward(grad_y, x, *params):
    _check_params(x, *params)
    if grad_y.device != x.device:
        raise RuntimeError(f"grad_y must be on {x.device} like x; got {grad_y.device}")
    if grad_y.dtype != x.dtype:
        raise TypeError(f"grad_y must have x's dtype {x.dtype}; got {grad_y.dtype}")
    expected = _output_shape(x, params[-1])
    if tuple(grad_y.shape) != expected:
        raise RuntimeError(f"grad_y must have the output's shape {expected}; got {tuple(grad_y.shape)}")


def _fake_backward(grad_y, x, *params):
    return torch.empty_like(x, memory_format=_layout.memory_format(x))


# ---- autograd (Python; the cpu/cuda family has the same in C++) ----

def _save_forward(ctx, inputs, output):
    x, *params = inputs
    ctx.save_for_backward(x)
    ctx.params = params


def _backward(ops, ctx, grad_y):
    (x,) = ctx.saved_tensors
    return (ops.minibatch_stddev_backward(grad_y, x, *ctx.params),) + (None,) * len(ctx.params)


def _save_backward(ctx, inputs, output):
    grad_y, x, *params = inputs
    ctx.save_for_backward(grad_y, x)
    ctx.params = params


def _double_backward(ops, ctx, g):
    grad_y, x = ctx.saved_tensors
    grad_grad_y, grad_x = ops.minibatch_stddev_double_backward(g, grad_y, x, *ctx.params)
    return (grad_grad_y, grad_x) + (None,) * len(ctx.params)


def _grouped(t, g, m, grouping):
    """[N, ...] -> [M, G, ...]: member k of group j is sample j + k*M (strided) or j*G + k (contiguous)."""
    if grouping == "strided":
        return t.reshape(g, m, *t.shape[1:]).transpose(0, 1)
    return t.reshape(m, g, *t.shape[1:])


def _ungrouped(t, grouping):
    """Inverse of _grouped: [M, G, ...] -> [N, ...]."""
    if grouping == "strided":
        t = t.transpose(0, 1)
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])  # not -1: ambiguous for an empty t


def _double_backward_formula(g, grad_y, x, group_size, grouping, unbiased, eps, num_new_features):
    """Gradients of <g, dx> w.r.t. grad_y and x, where the backward computes, per sample group m and position q of
    channel group f (K = C/F * H * W positions, D = G or G - 1):
        u = x - mean_m(x),  sigma = sqrt(sum_m(u^2) / D + eps),  dx = grad_y[:, :C] + a[m, f] * u / sigma,
        a[m, f] = sum over m's samples and H x W of grad_y[:, C + f] / (K * D).
    Nothing saved depends on x (sigma is recomputed from it), so these torch ops are differentiable to every order.

    With groups of two, u is +-(x_1 - x_2) / 2: the centred group values span one direction, that of v, and
    grad_x, what the projection off v leaves of it, is a multiple of 1 - sum_m(v^2) / D = eps / sigma^2, a
    difference of nearly equal terms: float32 math would leave only its rounding (errors of several times the
    value where the two samples are close), so that case is computed in float64.
    """
    n, c, h, w = x.shape
    nf = num_new_features
    fmt = _layout.memory_format(x)
    gs, m, zero = _layout.minibatch_groups(n, group_size, grouping)
    if zero or x.numel() == 0:  # the statistic is the constant 0, or dx is empty: dx = grad_y[:, :C]
        grad_stat = grad_y.new_zeros(n, nf, h, w)
        return torch.cat([g, grad_stat], 1).contiguous(memory_format=fmt), torch.zeros_like(x, memory_format=fmt)
    acc = torch.float64 if gs == 2 else _layout.stat_dtype(x.dtype)
    k = (c // nf) * h * w
    divisor = gs - 1 if unbiased else gs
    kd = k * divisor
    xg = _grouped(x.to(acc), gs, m, grouping).reshape(m, gs, nf, k)
    gg = _grouped(g.to(acc), gs, m, grouping).reshape(m, gs, nf, k)
    shifted = xg - xg[:, :1]  # centred about a member: exactly 0 for a group of equal values (a rounded mean is not,
    u = shifted - shifted.mean(1, keepdim=True)  # and u / sigma would amplify its rounding by up to 1 / sqrt(eps))
    sigma = torch.sqrt(u.square().sum(1, keepdim=True) / divisor + eps)
    v = u / sigma
    t = (gg * v).sum((1, 3))  # [M, F]
    stat_grad = _ungrouped((t / kd)[:, None, :].expand(m, gs, nf), grouping)  # [N, F]
    grad_grad_y = torch.cat([g.to(acc), stat_grad[:, :, None, None].expand(n, nf, h, w)], 1)
    a = _grouped(grad_y[:, c:].to(acc), gs, m, grouping).reshape(m, gs, nf, h * w).sum((1, 3)) / kd  # [M, F]
    hh = a[:, None, :, None] * gg
    du = (hh - v * (hh * v).sum(1, keepdim=True) / divisor) / sigma
    grad_x = _ungrouped(du - du.mean(1, keepdim=True), grouping).reshape(n, c, h, w)
    return (grad_grad_y.to(x.dtype).contiguous(memory_format=fmt),
            grad_x.to(x.dtype).contiguous(memory_format=fmt))


PARAMS_SCHEMA = "int group_size, str grouping, bool unbiased, float eps, int num_new_features"

_library.define(
    _library.RawOp("minibatch_stddev_forward", f"(Tensor x, {PARAMS_SCHEMA}) -> Tensor",
                   check=_check_forward, fake=_fake_forward,
                   backward=_backward, setup_context=_save_forward, cpp_autograd=("progan_fast",)),
    _library.RawOp("minibatch_stddev_backward", f"(Tensor grad_y, Tensor x, {PARAMS_SCHEMA}) -> Tensor",
                   check=_check_backward, fake=_fake_backward, backward=_double_backward,
                   setup_context=_save_backward, cpp_autograd=("progan_fast",)),
    _library.RawOp("minibatch_stddev_double_backward",
                   f"(Tensor g, Tensor grad_y, Tensor x, {PARAMS_SCHEMA}) -> (Tensor, Tensor)",
                   check=_check_double_backward, composite=_double_backward_formula),
)
