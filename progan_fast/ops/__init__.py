"""The fused ops. Each module here is one op: argument checks, backend choice, fake and autograd registration."""
from .blend import downsample_blend, fade_reals, upsample_blend
from .eq_conv import eq_conv2d, eq_linear
from .fade_from_rgb import fade_from_rgb
from .minibatch_stddev import minibatch_stddev
from .pixel_norm import pixel_norm
from .scaled_bias_act import scaled_bias_act

__all__ = ["downsample_blend", "eq_conv2d", "eq_linear", "fade_from_rgb", "fade_reals", "minibatch_stddev", "pixel_norm", "scaled_bias_act",
           "upsample_blend"]
