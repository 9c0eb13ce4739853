"""progan_fast: fused CPU / CUDA / Triton kernels for ProGAN and a thin progressive trainer built on them."""
from . import backends, reference
from .allocator import tune_allocator
from .backends import BackendUnavailable, get_backend, set_backend, use_backend
from .ops import (downsample_blend, eq_conv2d, eq_linear, fade_from_rgb, fade_reals, minibatch_stddev, pixel_norm,
                  scaled_bias_act, upsample_blend)
from .ops.winograd import conv_algorithm, set_conv_algorithm, use_conv_algorithm
from .patch import patch, unpatch

__version__ = "0.1.0"

__all__ = ["BackendUnavailable", "backends", "conv_algorithm", "downsample_blend", "eq_conv2d", "eq_linear",
           "fade_from_rgb", "fade_reals", "get_backend", "minibatch_stddev", "patch", "pixel_norm", "reference",
           "scaled_bias_act", "set_backend", "set_conv_algorithm", "tune_allocator", "unpatch", "upsample_blend",
           "use_backend", "use_conv_algorithm"]
