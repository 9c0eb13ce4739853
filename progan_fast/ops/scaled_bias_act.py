"""scaled_bias_act: the equalized-lr epilogue y = act(x * scale + bias[c]) with optional pixel norm over channels —
public function, raw ops, fakes and autograd.

Every activation is one leaky ReLU, act(v) = v if v > 0 else slope * v: lrelu uses its slope, relu slope 0,
linear slope 1 (so the kernels take a slope, not a name).

Raw ops (defined in every kernel family's namespace, see _library.py):
  scaled_bias_act_forward(x, bias, scale, slope, pixel_norm, eps) -> (y, rsqrt)
      rsqrt: one value per pixel in the math dtype with pixel norm (differentiable: the double backward's
      gradient with respect to it flows back to x), an empty tensor without.
  scaled_bias_act_backward(grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps, saved_is_input, bias_grad)
      -> (grad_x, grad_bias)
      one pass: grad_bias (a sum over every dimension but 1) comes out of the same sweep as grad_x; an empty
      tensor unless bias_grad. Itself differentiable (WGAN-GP's double backward).
  scaled_bias_act_double_backward(...), scaled_bias_act_rsqrt_backward(...)
      the formulas of the higher derivatives, in torch ops and the family's own backward kernel (every order).

Saved for backward ("saved" below), the minimum that determines the derivative:
  slope >= 0:                  y, the output. act'(v) is 1 where y > 0 and slope elsewhere (y > 0 iff v > 0
                               when slope >= 0: relu's zeros take slope 0 = its derivative), and pixel norm's
                               backward needs y itself. y is also what the next layer saves as its input, so this
                               costs no memory of its own.
  slope < 0:                   x, the input (and bias): act(v) > 0 for both signs of v, so y cannot tell them
                               apart; the backward recomputes v = scale * x + bias in registers.
  slope == 1, no pixel norm:   nothing (the derivative is the constant scale).
plus, with pixel norm, the float rsqrt per pixel. Half-precision outputs round y before it is saved: a |y| that
rounds to 0 (below 6e-8 in float16) takes the slope's derivative, which the float32 reference would not.

Pixel norm's backward from y: grad_a = r * (grad_y - y * mean_c(grad_y * y)) projects grad_y off y, and along y
leaves r * (1 - mean_c(y^2)) = r * eps * r^2 of it, a difference of nearly equal numbers that y rounded to 8 or
11 bits cannot resolve (with one active channel, e.g. pixel norm after relu, that is the whole gradient). The
backward therefore rescales the saved y to its exact norm, mean_c(y^2) = 1 - eps * r^2 (it reads eps): the same
function wherever y and r come from one forward, so every derivative is unchanged, and the cancellation is exact.
Kernels: csrc/cpu/scaled_bias_act.cpp, csrc/ops/scaled_bias_act.h (CUDA device code, also run by the emulated
family), progan_fast/triton/scaled_bias_act.py. The cpu/cuda family registers the same autograd in C++
(csrc/autograd/scaled_bias_act.cpp); the formulas of the higher derivatives exist once, as the composite raw ops.
"""
import torch

from .. import _layout, backends, reference
from .. import _library
from . import _checks

OP = "scaled_bias_act"
backends.register_op(OP, ("cpu", "cuda", "triton"))

ACTIVATION_SLOPES = {"relu": 0.0, "linear": 1.0}


def scaled_bias_act(x, bias=None, scale=1.0, activation="lrelu", negative_slope=0.2, pixel_norm=False, eps=1e-8):
    """y = act(x * scale + bias[channel]), then pixel norm over dim 1 if `pixel_norm`.

    x: N x C (x ...) tensor; bias: None or a [C] tensor of x's dtype and device; activation: "lrelu", "relu" or
    "linear". See progan_fast.reference.scaled_bias_act for the spec.
    """
    _checks.tensor("x", x)
    x, bias = _checks.autocast(x.device.type, x, bias)
    if x.dim() < 2:
        raise ValueError(f"x must have at least 2 dimensions (batch and channels); got shape {tuple(x.shape)}")
    check_bias("bias", bias, x, x.shape[1], "x.shape[1]")
    scale = _checks.finite_float("scale", scale)
    activation = _checks.choice("activation", activation, reference.ACTIVATIONS)
    negative_slope = _checks.finite_float("negative_slope", negative_slope)
    pixel_norm = _checks.flag("pixel_norm", pixel_norm)
    eps = _checks.finite_float("eps", eps, minimum=0.0)
    return dispatch(x, bias, scale, activation, negative_slope, pixel_norm, eps)


def check_bias(name, bias, x, channels, what):
    if bias is None:
        return
    _checks.tensor(name, bias, ndims=(1,), nonempty_batch=False)
    _checks.same_device_dtype(name, bias, "x", x)
    if bias.shape[0] != channels:
        raise ValueError(f"{name} must have {channels} elements ({what}); got shape {tuple(bias.shape)}")


def dispatch(x, bias, scale, activation, negative_slope, pixel_norm, eps=1e-8):
    """The op after argument checks (for composites that have already validated their arguments)."""
    backend = backends.resolve(OP, x.device)
    if backend == "reference":
        return reference.scaled_bias_act(x, bias, scale, activation, negative_slope, pixel_norm, eps)
    slope = ACTIVATION_SLOPES.get(activation, negative_slope)
    return _library.family_ops(backend).scaled_bias_act_forward(x, bias, scale, slope, pixel_norm, eps)[0]


# ---- what the backward reads (the C++ autograd applies the same rule: csrc/autograd/scaled_bias_act.cpp) ----

def reads_saved(slope, pixel_norm):
    return pixel_norm or slope != 1.0


def saves_input(slope):
    return slope < 0.0


# ---- checks (the C++ kernels make the same: csrc/common/scaled_bias_act_operands.h) and fakes ----

def _stat_shape(x):
    return [x.shape[0], 1] + list(x.shape[2:])


def _check_channels_tensor(name, t, x, dtype=None, like="x"):
    if t.device != x.device:
        raise RuntimeError(f"{name} must be on {x.device} like {like}; got {t.device}")
    if t.dtype != (dtype or x.dtype):
        raise TypeError(f"{name} must have dtype {dtype or x.dtype}; got {t.dtype}")


def _check_bias(bias, x):
    if bias is not None:
        _check_channels_tensor("bias", bias, x)
        if bias.dim() != 1 or bias.shape[0] != x.shape[1]:
            raise RuntimeError(f"bias must have shape ({x.shape[1]},); got {tuple(bias.shape)}")


def _check_per_pixel(name, t, x, x_name):
    """One value per pixel of x (every position but the channel) in x's math dtype: rsqrt and its gradient."""
    if t.device != x.device:
        raise RuntimeError(f"{name} must be on {x.device} like {x_name}; got {t.device}")
    if t.dtype != _layout.stat_dtype(x.dtype):
        raise TypeError(f"{name} must be {_layout.stat_dtype(x.dtype)} (the math dtype of {x.dtype}); got {t.dtype}")
    pixels = _numel(_stat_shape(x))
    if t.numel() != pixels:
        raise RuntimeError(f"{name} must have one value per pixel ({pixels}); got {t.numel()}")


def _check_saved_is_input(slope, saved_is_input):
    if saves_input(slope) and not saved_is_input:
        raise ValueError(f"saved_is_input must be true for slope {slope} < 0 (the derivative needs x: y cannot "
                         "tell its sign)")


def _check_forward(x, bias, scale, slope, pixel_norm, eps):
    if x.dim() < 2:
        raise RuntimeError(f"x must have at least 2 dimensions (batch and channels); got shape {tuple(x.shape)}")
    _check_bias(bias, x)


def _fake_forward(x, bias, scale, slope, pixel_norm, eps):
    y = x.new_empty(x.shape).contiguous(memory_format=_layout.memory_format(x))
    r = x.new_empty(_stat_shape(x) if pixel_norm else [0], dtype=_layout.stat_dtype(x.dtype))
    return y, r


def _check_backward(grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps, saved_is_input, bias_grad):
    if grad_y.dim() < 2:
        raise RuntimeError(f"grad_y must have at least 2 dimensions; got shape {tuple(grad_y.shape)}")
    if saved is None:
        if reads_saved(slope, pixel_norm):
            raise RuntimeError("saved (y, or x for a negative slope) is required unless the activation is linear "
                               "without pixel norm")
    else:
        if reads_saved(slope, pixel_norm):
            _check_saved_is_input(slope, saved_is_input)
        _check_channels_tensor("saved", saved, grad_y)
        if saved.shape != grad_y.shape:
            raise RuntimeError(f"saved must have grad_y's shape {tuple(grad_y.shape)}; got {tuple(saved.shape)}")
    if pixel_norm:
        if rsqrt is None:
            raise RuntimeError("rsqrt is required with pixel_norm")
        _check_per_pixel("rsqrt", rsqrt, grad_y, "grad_y")
    _check_bias(bias, grad_y)


def _check_double_backward(grad_grad_x, grad_grad_bias, grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps,
                           saved_is_input):
    """The backward's operands as the backward checks them, and each gradient placed, typed and shaped like the
    backward output it is the gradient of (the formula would broadcast a misshaped one into a wrong result):
    grad_grad_x like grad_x (grad_y's shape), grad_grad_bias like grad_bias ([C], or [0] when the backward ran
    without a bias gradient)."""
    _check_backward(grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps, saved_is_input, False)
    if grad_grad_x is not None:
        _check_channels_tensor("grad_grad_x", grad_grad_x, grad_y, like="grad_y")
        if grad_grad_x.shape != grad_y.shape:
            raise RuntimeError(f"grad_grad_x must have grad_y's shape {tuple(grad_y.shape)}; got "
                               f"{tuple(grad_grad_x.shape)}")
    if grad_grad_bias is not None:
        _check_channels_tensor("grad_grad_bias", grad_grad_bias, grad_y, like="grad_y")
        channels = grad_y.shape[1]
        if tuple(grad_grad_bias.shape) not in ((channels,), (0,)):
            raise RuntimeError(f"grad_grad_bias must have shape ({channels},) (or (0,): no bias gradient); got "
                               f"{tuple(grad_grad_bias.shape)}")


def _check_rsqrt_backward(grad_rsqrt, saved, rsqrt, bias, scale, slope, saved_is_input, bias_grad):
    """What the backward with pixel norm reads, checked as it checks it (saved: y, or x for a negative slope; one
    rsqrt per pixel; bias [C]), and grad_rsqrt, the gradient of the forward's rsqrt, placed, typed and shaped like
    rsqrt."""
    if saved.dim() < 2:
        raise RuntimeError(f"saved must have at least 2 dimensions (batch and channels); got shape "
                           f"{tuple(saved.shape)}")
    _check_saved_is_input(slope, saved_is_input)
    _check_per_pixel("rsqrt", rsqrt, saved, "saved")
    _check_bias(bias, saved)
    _check_per_pixel("grad_rsqrt", grad_rsqrt, saved, "saved")
    if grad_rsqrt.shape != rsqrt.shape:
        raise RuntimeError(f"grad_rsqrt must have rsqrt's shape {tuple(rsqrt.shape)}; got {tuple(grad_rsqrt.shape)}")


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def layout_source(grad_y, saved, slope, pixel_norm):
    """The tensor whose memory format the backward computes in (and returns): saved when the backward reads it
    (csrc/common/scaled_bias_act_operands.h makes the same choice)."""
    return saved if saved is not None and reads_saved(slope, pixel_norm) else grad_y


def _fake_backward(grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps, saved_is_input, bias_grad):
    grad_x = grad_y.new_empty(grad_y.shape).contiguous(
        memory_format=_layout.memory_format(layout_source(grad_y, saved, slope, pixel_norm)))
    return grad_x, grad_y.new_empty([grad_y.shape[1] if bias_grad else 0])


# ---- autograd (Python; the cpu/cuda family has the same in C++) ----

def _save_forward(ctx, inputs, output):
    x, bias, scale, slope, pixel_norm, eps = inputs
    ctx.set_materialize_grads(False)  # an unused rsqrt gradient stays None instead of a tensor of zeros
    saved_is_input = saves_input(slope)
    saved = None
    if reads_saved(slope, pixel_norm):
        saved = x if saved_is_input else output[0]
    ctx.save_for_backward(saved, output[1] if pixel_norm else None, bias if saved_is_input else None)
    if not pixel_norm:
        ctx.mark_non_differentiable(output[1])
    ctx.params = (scale, slope, pixel_norm, eps, saved_is_input)


def _backward(ops, ctx, grad_y, grad_rsqrt):
    saved, rsqrt, bias = ctx.saved_tensors
    scale, slope, pixel_norm, eps, saved_is_input = ctx.params
    bias_grad = ctx.needs_input_grad[1]
    grad_x = grad_bias = None
    if grad_y is not None:
        grad_x, grad_bias = ops.scaled_bias_act_backward(grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps,
                                                         saved_is_input, bias_grad)
    if grad_rsqrt is not None and pixel_norm:  # only in higher derivatives, through the double backward's rsqrt gradient
        gx, gb = ops.scaled_bias_act_rsqrt_backward(grad_rsqrt, saved, rsqrt, bias, scale, slope, saved_is_input,
                                                    bias_grad)
        grad_x = gx if grad_x is None else grad_x + gx
        grad_bias = gb if grad_bias is None else grad_bias + gb
    return grad_x, grad_bias if bias_grad else None, None, None, None, None


def _save_backward(ctx, inputs, output):
    grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps, saved_is_input, _ = inputs
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(grad_y, saved, rsqrt, bias)
    ctx.params = (scale, slope, pixel_norm, eps, saved_is_input)


def _double_backward(ops, ctx, grad_grad_x, grad_grad_bias):
    grad_y, saved, rsqrt, bias = ctx.saved_tensors
    scale, slope, pixel_norm, eps, saved_is_input = ctx.params
    unused = (None,) * 6
    if grad_grad_x is None and (grad_grad_bias is None or grad_grad_bias.numel() == 0):
        return (None, None, None, None) + unused
    g_grad_y, g_saved, g_rsqrt, g_bias = ops.scaled_bias_act_double_backward(
        grad_grad_x, grad_grad_bias, grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps, saved_is_input)
    if not pixel_norm:  # piecewise linear in x and bias: only grad_y has a gradient
        return (g_grad_y, None, None, None) + unused
    return (g_grad_y, g_saved, g_rsqrt, g_bias if bias is not None and saved_is_input else None) + unused


# ---- the formulas of the higher derivatives (composite raw ops, shared by every family) ----

def restored_norm(y, r, eps):
    """The factor that gives the saved y its exact norm, mean_c(y^2) = 1 - eps * r^2 (1 where y is all zero);
    the kernels apply the same (module docstring)."""
    mean_sq = (y * y).mean(1, keepdim=True)
    return torch.where(mean_sq > 0, (1 - eps * r * r) / mean_sq, torch.ones_like(mean_sq)).sqrt()


def _view_channels(t, like):
    return t.reshape([1, -1] + [1] * (like.dim() - 2))


def _sum_channels(t):
    """Sum over every dimension but 1: a per-channel [C] vector."""
    return t.sum([d for d in range(t.dim()) if d != 1])


def _activation_grad(saved, bias, scale, slope, saved_is_input, math_dtype):
    """(v, act'(v)) in the math dtype, v as the backward kernels take it: recomputed from x = saved and bias, or
    y = saved itself (y > 0 exactly where v > 0 for slope >= 0)."""
    if saved_is_input:
        v = saved.to(math_dtype) * scale
        if bias is not None:
            v = v + _view_channels(bias.to(math_dtype), v)
    else:
        v = saved.to(math_dtype)
    return v, (v > 0).to(math_dtype) * (1.0 - slope) + slope


def _double_backward_formula(ops, grad_grad_x, grad_grad_bias, grad_y, saved, rsqrt, bias, scale, slope,
                             pixel_norm, eps, saved_is_input):
    """Gradients of <G_x, grad_x> + <G_b, grad_bias> w.r.t. (grad_y, saved, rsqrt, bias) of the backward.

    With d = act'(v) (1 or slope: piecewise constant), Gv = scale * G_x + G_b[c] and Ga = d * Gv:
      no pixel norm: grad_x = scale * d * grad_y is linear in grad_y and locally constant in x, so only grad_y has
        a gradient, d * Gv: the backward kernel itself without G_b (again differentiable, so every order is right),
        torch ops with it (the kernel applies its one scale to grad_y and to the pre-activation it recomputes).
      pixel norm, m = mean_c(grad_y * y), q = mean_c(Ga * y) (the forward's y, with r held fixed):
        d grad_y = r * (Ga - y * q)
        d y      = -r * (m * Ga + q * grad_y)
        d r      = sum_c(Ga * grad_y) - C * m * q
      and when saved is x, d y is carried on to x and bias through y = d * (scale * x + bias) * r,
      with r's own share y / r. r's dependence on x is not dropped: it is the forward's differentiable second
      output, whose gradient the forward's backward handles (scaled_bias_act_rsqrt_backward). y is used with its
      norm restored, as in the backward kernels (see the module docstring).
      One channel: the kernels write grad_a = eps * r^3 * grad_y, and the gradients are its own (below).
    Unused outputs are empty tensors.
    """
    empty = grad_y.new_empty([0])
    if grad_grad_bias is not None and grad_grad_bias.numel() == 0:  # the backward ran without a bias gradient
        grad_grad_bias = None
    if grad_grad_x is None and grad_grad_bias is None:
        return empty, empty, empty, empty
    math_dtype = _layout.stat_dtype(grad_y.dtype)
    if not pixel_norm:
        if grad_grad_bias is None:
            g_grad_y = ops.scaled_bias_act_backward(grad_grad_x, saved, None, bias, scale, slope, False, eps,
                                                    saved_is_input, False)[0]
            return g_grad_y, empty, empty, empty
        # d * (scale * G_x + G_b[c]) in torch ops: the kernel would also apply its scale to the pre-activation it
        # recomputes from x, so it cannot take gv with scale 1
        gv = _view_channels(grad_grad_bias.to(math_dtype), grad_y)
        if grad_grad_x is not None:
            gv = grad_grad_x.to(math_dtype) * scale + gv
        if reads_saved(slope, False):
            gv = _activation_grad(saved, bias, scale, slope, saved_is_input, math_dtype)[1] * gv
        fmt = _layout.memory_format(layout_source(grad_y, saved, slope, False))
        return gv.expand(grad_y.shape).to(grad_y.dtype).contiguous(memory_format=fmt), empty, empty, empty
    r = rsqrt.to(math_dtype).reshape(_stat_shape(grad_y))
    gy = grad_y.to(math_dtype)
    v, d = _activation_grad(saved, bias, scale, slope, saved_is_input, math_dtype)
    gv = None
    if grad_grad_x is not None:
        gv = grad_grad_x.to(math_dtype) * scale
    if grad_grad_bias is not None:
        gb = _view_channels(grad_grad_bias.to(math_dtype), gy)
        gv = gb if gv is None else gv + gb
    ga = d * gv
    channels = gy.shape[1]
    if channels == 1:
        # the kernels write grad_a = eps r^3 grad_y here (csrc/common/pixel_norm_math.h), a function of grad_y and r
        # alone: these are its derivatives. The general ones below agree on the forward's values, but each of them
        # is a multiple of 1 - y^2 = eps r^2 left to float32 rounding, and with x saved x's gradient comes as the
        # difference of two terms ~ r^2 (through y and through r) that autograd adds in float32.
        eps_r2 = eps * r * r
        g_grad_y = r * eps_r2 * ga
        g_r = 3 * eps_r2 * gy * ga
        g_bias = bias.new_zeros([1]) if saved_is_input and bias is not None else empty
        return (g_grad_y.to(grad_y.dtype), torch.zeros_like(saved), g_r.reshape(rsqrt.shape).to(rsqrt.dtype), g_bias)
    y = d * v * r if saved_is_input else v
    y_exact = y * restored_norm(y, r, eps).detach()
    m = (gy * y_exact).mean(1, keepdim=True)
    q = (ga * y_exact).mean(1, keepdim=True)
    g_grad_y = r * (ga - y_exact * q)
    g_y = -r * (m * ga + q * gy)
    g_r = (ga * gy).sum(1, keepdim=True) - channels * m * q
    g_bias = empty
    if saved_is_input:
        g_r = g_r + (g_y * y).sum(1, keepdim=True) / r
        g_v = g_y * d * r
        if bias is not None:
            g_bias = _sum_channels(g_v).to(bias.dtype)
        g_saved = g_v * scale
    else:
        g_saved = g_y
    return (g_grad_y.to(grad_y.dtype), g_saved.to(saved.dtype), g_r.reshape(rsqrt.shape).to(rsqrt.dtype), g_bias)


def _rsqrt_backward_formula(ops, grad_rsqrt, saved, rsqrt, bias, scale, slope, saved_is_input, bias_grad):
    """The share of the forward's gradient that comes through its rsqrt output: r = rsqrt(mean_c(a^2) + eps) has
    dr/da = -r^3 a / C = -r^2 y / C, so it is the backward without pixel norm applied to -grad_rsqrt * r^2 * y / C."""
    math_dtype = _layout.stat_dtype(saved.dtype)
    r = rsqrt.to(math_dtype).reshape(_stat_shape(saved))
    if saved_is_input:
        y = ops.scaled_bias_act_forward(saved, bias, scale, slope, False, 0.0)[0].to(math_dtype) * r
    else:
        y = saved.to(math_dtype)
    gr = grad_rsqrt.to(math_dtype).reshape(r.shape)
    grad_a = (-gr * r * r / saved.shape[1]) * y
    return ops.scaled_bias_act_backward(grad_a.to(saved.dtype), saved, None, bias if saved_is_input else None,
                                        scale, slope, False, 0.0, saved_is_input, bias_grad)


_library.define(
    _library.RawOp("scaled_bias_act_forward",
                   "(Tensor x, Tensor? bias, float scale, float slope, bool pixel_norm, float eps) -> (Tensor, Tensor)",
                   check=_check_forward, fake=_fake_forward, backward=_backward, setup_context=_save_forward,
                   cpp_autograd=("progan_fast",)),
    _library.RawOp("scaled_bias_act_backward",
                   "(Tensor grad_y, Tensor? saved, Tensor? rsqrt, Tensor? bias, float scale, float slope, "
                   "bool pixel_norm, float eps, bool saved_is_input, bool bias_grad) -> (Tensor, Tensor)",
                   check=_check_backward, fake=_fake_backward, backward=_double_backward,
                   setup_context=_save_backward, cpp_autograd=("progan_fast",)),
    _library.RawOp("scaled_bias_act_double_backward",
                   "(Tensor? grad_grad_x, Tensor? grad_grad_bias, Tensor grad_y, Tensor? saved, Tensor? rsqrt, "
                   "Tensor? bias, float scale, float slope, bool pixel_norm, float eps, bool saved_is_input) "
                   "-> (Tensor, Tensor, Tensor, Tensor)",
                   check=_check_double_backward, family_composite=_double_backward_formula),
    _library.RawOp("scaled_bias_act_rsqrt_backward",
                   "(Tensor grad_rsqrt, Tensor saved, Tensor rsqrt, Tensor? bias, float scale, float slope, "
                   "bool saved_is_input, bool bias_grad) -> (Tensor, Tensor)",
                   check=_check_rsqrt_backward, family_composite=_rsqrt_backward_formula),
)
