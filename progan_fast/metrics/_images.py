"""The image batches the metrics take: uint8 N x C x H x W, as torch tensors or numpy arrays."""
import numpy as np
import torch


def uint8_images(name, images, channels=None):
    """`images` as a uint8 N x C x H x W torch tensor (a numpy array is wrapped, not copied unless it is not
    contiguous); anything else is refused naming `name`. `channels`: the C allowed, None for any."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a uint8 torch.Tensor or numpy array; got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 in [0, 255] (map generator output with "
                        f"progan_fast.images.to_uint8); got {images.dtype}")
    if images.dim() != 4 or (channels is not None and images.shape[1] not in channels):
        which = "" if channels is None else f" with C in {channels}"
        raise ValueError(f"{name} must be N x C x H x W{which}; got shape {tuple(images.shape)}")
    return images
