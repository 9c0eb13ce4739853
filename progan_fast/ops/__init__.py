"""The fused ops. Each module here is one op: argument checks, backend choice, fake and autograd registration."""
from .pixel_norm import pixel_norm

__all__ = ["pixel_norm"]
