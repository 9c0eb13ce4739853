"""progan_fast: fused CPU / CUDA / Triton kernels for ProGAN and a thin progressive trainer built on them."""
from . import backends, reference
from .backends import BackendUnavailable, get_backend, set_backend, use_backend
from .ops import pixel_norm

__version__ = "0.1.0"

__all__ = ["BackendUnavailable", "backends", "get_backend", "pixel_norm", "reference", "set_backend",
           "use_backend"]
