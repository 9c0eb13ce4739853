"""Image-set metrics of the ProGAN paper on uint8 image tensors: sliced Wasserstein distance (swd) and MS-SSIM.
Generator output ([-1, 1] floats) becomes uint8 with progan_fast.images.to_uint8."""
from .ms_ssim import ms_ssim
from .swd import sliced_wasserstein

__all__ = ["ms_ssim", "sliced_wasserstein"]
