"""The specification: every progan_fast op in plain PyTorch.

Forward only; autograd provides the backward. These functions are the ground truth of every test and benchmark
and are what the `reference` backend runs. Half-precision inputs are computed in float32 and cast back, as the
kernels do.
"""
import torch


def _opmath(x):
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def pixel_norm(x, dim=1, eps=1e-8):
    """Pixelwise feature normalisation (Karras et al. 2017, sec. 4.2; TF official `pixel_norm`).

    y = x * rsqrt(mean over `dim` of x^2 + eps). `dim=1` normalises each pixel's feature vector of an NCHW
    activation, or each row of a 2-D latent batch. TF official and pro-gan-pth use eps = 1e-8 (the TF fp16 preset
    1e-4); pytorch_GAN_zoo uses the same formula.
    """
    xf = _opmath(x)
    return (xf * torch.rsqrt(xf.square().mean(dim, keepdim=True) + eps)).to(x.dtype)
