"""Image-set metrics on uint8 image tensors: the ProGAN paper's sliced Wasserstein distance (swd) and MS-SSIM, and
nearest-neighbour distances within a set (diversity). Generator output ([-1, 1] floats) becomes uint8 with
progan_fast.images.to_uint8."""
from .diversity import nearest_neighbour_distances
from .ms_ssim import ms_ssim
from .swd import sliced_wasserstein

__all__ = ["ms_ssim", "nearest_neighbour_distances", "sliced_wasserstein"]
