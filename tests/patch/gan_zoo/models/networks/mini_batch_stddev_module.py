"""pytorch_GAN_zoo's minibatch stddev: CONTIGUOUS groups, UNBIASED variance."""
import torch


def miniBatchStdDev(x, subGroupSize=4):  # noqa: N802, N803
    """Groups of S = min(N, subGroupSize) consecutive samples (one group of N when S does not divide N); each
    sample gets its group's mean over C, H, W of sqrt(unbiased var + 1e-8); groups of one give a zero map."""
    n, c, h, w = x.shape
    s = min(n, subGroupSize)
    if n % s:
        s = n
    if s == 1:
        return torch.cat([x, torch.zeros(n, 1, h, w, device=x.device)], dim=1)
    groups = n // s
    std = torch.sqrt(torch.var(x.view(groups, s, c, h, w), 1) + 1e-8)   # unbiased: divides by S - 1
    per_group = std.view(groups, -1).mean(1)
    feature = per_group.view(groups, 1, 1, 1, 1).expand(groups, s, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, feature], dim=1)
