"""Every Triton kernel module. Importing this registers their kernels with the progan_fast_triton raw ops
(progan_fast._library.family_ops does it on first use); progan_fast.triton.aot compiles each module's cases."""
from . import fade, minibatch_stddev, pixel_norm, scaled_bias_act

MODULES = (pixel_norm, minibatch_stddev, scaled_bias_act, fade)
