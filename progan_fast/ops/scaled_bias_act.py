"""scaled_bias_act: the equalized-lr epilogue act(x * scale + bias[c]) with optional pixel norm over channels.

No fused kernel yet: every backend runs progan_fast.reference.scaled_bias_act. eq_conv2d and eq_linear route
their epilogue through `dispatch` here, so a kernel registered for this op speeds them up without changes there.
"""
from .. import backends, reference
from . import _checks

OP = "scaled_bias_act"
backends.register_op(OP, ())


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
    backends.resolve(OP, x.device)
    return reference.scaled_bias_act(x, bias, scale, activation, negative_slope, pixel_norm, eps)
