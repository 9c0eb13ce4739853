"""Memory-layout and grouping rules shared by every kernel family, the fake functions, the Triton wrappers and the tests
(the C++ side of the same rule: csrc/common/reduction_layout.h). A leaf module: it imports nothing of ours."""
import torch


def is_channels_last(x):
    """True for a 4-D tensor stored channels_last and not also contiguous (C == 1 or 1x1 maps are both)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def memory_format(x):
    """The memory format an op's output keeps: channels_last for channels_last inputs, contiguous otherwise
    (any other strides are computed from a contiguous copy)."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def reduction_output_format(x, dim):
    """A reduction over `dim` keeps channels_last only when it reduces the channels (dim 1) of a channels_last
    tensor; everything else is computed and returned contiguous."""
    return memory_format(x) if dim % max(x.dim(), 1) == 1 else torch.contiguous_format


def stat_dtype(dtype):
    """Per-pixel statistics saved for backward are kept in the math dtype: float32, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def minibatch_groups(n, group_size, grouping):
    """(G, M, zero) for minibatch stddev over n samples: samples per group, number of groups, and whether the
    statistic is identically zero (contiguous groups of one sample). Sample n is in group n mod M (strided) or
    n // G (contiguous)."""
    g = min(group_size, n)
    if grouping == "contiguous" and n % g:
        g = n
    return g, n // g, grouping == "contiguous" and g == 1
