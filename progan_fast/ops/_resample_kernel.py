"""The fused up/down convs' (k+1) x (k+1) kernel K from the k x k weight W, cheap in every direction of autograd.

K = progan_fast.reference.resample_kernel(W), the 2x2 box sum of W zero-padded by one ("full"); the fused up conv
runs conv_transpose2d with K.flip(-1, -2).transpose(0, 1). The reference's pad + four slices runs its adds with
k-element inner loops, and its backward writes four zero-filled weight-sized `slice_backward` tensors plus the
pad's backward; the up conv's flipped, transposed view is copied twice more (the flip, then contiguous for the
conv, about 5 % of a 128-channel up conv). Here the pair of linear maps

    full box sum   K[a, b]  = W[a, b] + W[a-1, b] + W[a, b-1] + W[a-1, b-1]        (terms outside W are 0)
    valid box sum  gW[i, j] = gK[i+1, j+1] + gK[i, j+1] + gK[i+1, j] + gK[i, j]

are each other's adjoint, so each one's backward is the other: nothing saved, differentiable to any order.

Both run as whole-buffer adds of shifted flat views: in memory order a weight is a stack of k x k maps of c-element
pixels (c = 1 for a contiguous [O, I, k, k] tensor, c = I for a channels_last one), and once the maps are laid out
(k+1) x (k+1) with a zero last row and column, a shift by one row or column of every map at once is a shift of the
flat buffer by (k+1)*c or c elements. The up conv's kernel is built the same way from the flipped, transposed W
(a k x k copy), straight into the contiguous layout the conv takes. The terms are added in the order the
reference's forward adds them and its autograd accumulates the slice gradients (flipping reverses that order),
zero terms included, so K and dK/dW are bit-identical to the reference's.
"""
import torch

from .. import _layout

# The four terms as (rows, columns) shifts, in the reference's order: K[a, b] += W[a - dy, b - dx] (full), and
# gW[i, j] += gK[i + dy, j + dx] (valid). The flipped kernel's terms come in the reverse order.
_FULL_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))
_VALID_ORDER = ((1, 1), (0, 1), (1, 0), (0, 0))


def _maps(tensor):
    """`tensor` [O, I, s, s] as [A, B, s, s, c] maps of c-element pixels, [O, I, s, s, 1] or, channels_last,
    [O, 1, s, s, I], so that their memory order is the tensor's (a view), and a function that maps such maps,
    of any size s, back to [O, I, s, s] in that order."""
    if _layout.is_channels_last(tensor):
        return tensor.permute(0, 2, 3, 1).unsqueeze(1), lambda maps: maps.squeeze(1).permute(0, 3, 1, 2)
    return tensor.unsqueeze(-1), lambda maps: maps.squeeze(-1)


def _full_box_sum(maps, order):
    """[A, B, k, k, c] maps (any strides) -> their full box sums, a contiguous [A, B, k+1, k+1, c] tensor."""
    a, b, k, _, c = maps.shape
    r = k + 1
    size = a * b * r * r * c
    # Every map at the top left of an r x r block, zeros elsewhere, after a zero lead as long as the largest shift
    # so that shifted reads of the first map stay inside the buffer.
    lead = (r + 1) * c
    buffer = maps.new_empty(lead + size)
    buffer[:lead].zero_()
    padded = buffer[lead:].view(a, b, r, r, c)
    padded[:, :, k].zero_()
    padded[:, :, :k, k].zero_()
    for row in range(k):  # row by row: one k x k copy runs k-element inner loops, markedly slower for c = 1
        padded[:, :, row, :k].copy_(maps[:, :, row])
    shifted = [buffer[lead - offset:lead - offset + size] for offset in ((dy * r + dx) * c for dy, dx in order)]
    kernel = torch.add(shifted[0], shifted[1])
    kernel.add_(shifted[2])
    kernel.add_(shifted[3])
    return kernel.view(a, b, r, r, c)


def _valid_box_sum(maps, order):
    """[A, B, r, r, c] maps -> their valid box sums, a contiguous [A, B, r-1, r-1, c] tensor."""
    a, b, r, _, c = maps.shape
    k = r - 1
    flat = maps.reshape(-1)
    # sums[f] reads up to flat[f + (r+1)*c]: the last (r+1)*c positions, never inside a k x k map, are not summed
    length = flat.numel() - (r + 1) * c
    shifted = [flat[offset:offset + length] for offset in ((dy * r + dx) * c for dy, dx in order)]
    sums = maps.new_empty(flat.numel())
    torch.add(shifted[0], shifted[1], out=sums[:length])
    sums[:length].add_(shifted[2])
    sums[:length].add_(shifted[3])
    blocks = sums.view(a, b, r, r, c)
    grad_weight = maps.new_empty(a, b, k, k, c)
    for row in range(k):
        grad_weight[:, :, row].copy_(blocks[:, :, row, :k])
    return grad_weight


def _kernel(weight, transposed):
    if transposed:
        # conv_transpose2d's weight K.flip(-1, -2).transpose(0, 1), contiguous: the flipped map's terms are the
        # reference's in reverse order
        maps = weight.transpose(0, 1).flip(-1, -2).unsqueeze(-1)
        return _full_box_sum(maps, _FULL_ORDER[::-1]).squeeze(-1)
    maps, as_weight = _maps(weight)
    return as_weight(_full_box_sum(maps, _FULL_ORDER))


def _kernel_adjoint(grad_kernel, transposed):
    maps, as_weight = _maps(grad_kernel)
    if transposed:
        return as_weight(_valid_box_sum(maps, _VALID_ORDER[::-1])).flip(-1, -2).transpose(0, 1)
    return as_weight(_valid_box_sum(maps, _VALID_ORDER))


class _ResampleKernel(torch.autograd.Function):
    @staticmethod
    def forward(weight, transposed):
        return _kernel(weight, transposed)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.transposed = inputs[1]

    @staticmethod
    def backward(ctx, grad_kernel):
        return _ResampleKernelAdjoint.apply(grad_kernel, ctx.transposed), None


class _ResampleKernelAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(grad_kernel, transposed):
        return _kernel_adjoint(grad_kernel, transposed)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.transposed = inputs[1]

    @staticmethod
    def backward(ctx, grad_grad_weight):
        return _ResampleKernel.apply(grad_grad_weight, ctx.transposed), None


def resample_kernel(weight):
    """progan_fast.reference.resample_kernel(weight) for a 4-D [O, I, k, k] weight (same values, same memory
    format), with the cheap autograd above."""
    return _ResampleKernel.apply(weight, False)


def transposed_resample_kernel(weight):
    """resample_kernel(weight).flip(-1, -2).transpose(0, 1), the fused up conv's conv_transpose2d weight, as a
    contiguous [I, O, k+1, k+1] tensor (same values)."""
    return _ResampleKernel.apply(weight, True)
