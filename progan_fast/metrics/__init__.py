"""Image-set metrics of the ProGAN paper on uint8 image tensors: sliced Wasserstein distance (swd) and MS-SSIM."""
from ..train.data import to_uint8 as generate_uint8
from .ms_ssim import ms_ssim
from .swd import sliced_wasserstein

__all__ = ["generate_uint8", "ms_ssim", "sliced_wasserstein"]
