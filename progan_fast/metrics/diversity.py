"""How far each image of a set is from its nearest neighbour in the same set: a generator that reproduces a few
images (memorised training images, or mode collapse) gives many near-zero distances, whatever its SWD."""
import torch


def nearest_neighbour_distances(images, chunk=512):
    """For N >= 2 uint8 images N x C x H x W: float64 [N], the root-mean-square pixel difference (0..255 scale)
    between each image and the closest other image of the set."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise TypeError(f"images must be a uint8 torch.Tensor; got "
                        f"{images.dtype if isinstance(images, torch.Tensor) else type(images).__name__}")
    if images.dim() != 4 or images.shape[0] < 2:
        raise ValueError(f"images must be N x C x H x W with N >= 2; got shape {tuple(images.shape)}")
    flat = images.flatten(1).to(torch.float64)
    norms = flat.square().sum(1)
    out = torch.empty(flat.shape[0], dtype=torch.float64)
    for start in range(0, flat.shape[0], chunk):
        block = flat[start:start + chunk]
        d2 = norms[start:start + chunk, None] + norms[None, :] - 2.0 * (block @ flat.T)
        d2[torch.arange(block.shape[0]), torch.arange(start, start + block.shape[0])] = float("inf")
        out[start:start + chunk] = d2.min(1).values.clamp_min(0.0)
    return (out / flat.shape[1]).sqrt()
