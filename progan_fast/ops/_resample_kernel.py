"""The fused up/down convs' (k+1) x (k+1) kernel K from the k x k weight W, cheap in every direction of autograd.

K = progan_fast.reference.resample_kernel(W), the 2x2 box sum of W zero-padded by one ("full"). The reference's
pad + four slices runs its adds with k-element inner loops, and its backward writes four zero-filled weight-sized
`slice_backward` tensors plus the pad's backward; D's and G's steps run it for every fused conv. Here the pair of
linear maps

    full box sum   K[a, b]  = W[a, b] + W[a-1, b] + W[a, b-1] + W[a-1, b-1]        (terms outside W are 0)
    valid box sum  gW[i, j] = gK[i+1, j+1] + gK[i, j+1] + gK[i+1, j] + gK[i, j]

are each other's adjoint, so each one's backward is the other: nothing saved, differentiable to any order.

Both run as whole-buffer adds of shifted flat views: in memory order a weight is a stack of k x k maps of c-element
pixels (c = 1 for a contiguous [O, I, k, k] tensor, c = I for a channels_last one), and once the maps are laid out
(k+1) x (k+1) with a zero last row and column, a shift by one row or column of every map at once is a shift of the
flat buffer by (k+1)*c or c elements. The terms are added in the order the reference's forward adds them and its
autograd accumulates the slice gradients, zero terms included, so K and dK/dW are bit-identical to the reference's.
"""
import torch

from .. import _layout


def _maps(tensor):
    """`tensor` [O, I, s, s] as a contiguous [n, s, s, c] stack of maps in its memory order, and whether that
    order is channels_last."""
    if _layout.is_channels_last(tensor):
        return tensor.permute(0, 2, 3, 1), True
    out_channels, in_channels, size, _ = tensor.shape
    return tensor.contiguous().view(out_channels * in_channels, size, size, 1), False


def _as_weight(maps, channels, channels_last):
    """The inverse of _maps: [n, s, s, c] back to [*channels, s, s] = [O, I, s, s] in the same memory order."""
    if channels_last:
        return maps.permute(0, 3, 1, 2)
    return maps.view(channels + maps.shape[1:3])


def _full_box_sum(weight):
    maps, channels_last = _maps(weight)
    n, k, _, c = maps.shape
    r = k + 1
    size = n * r * r * c
    # Every map at the top left of an r x r block, zeros elsewhere, after a zero lead as long as the largest shift
    # so that shifted reads of the first map stay inside the buffer.
    lead = (r + 1) * c
    buffer = weight.new_empty(lead + size)
    buffer[:lead].zero_()
    padded = buffer[lead:].view(n, r, r, c)
    padded[:, k].zero_()
    padded[:, :k, k].zero_()
    for row in range(k):  # row by row: one n x k x k copy runs k-element inner loops, markedly slower for c = 1
        padded[:, row, :k].copy_(maps[:, row])
    kernel = torch.add(buffer[lead:], buffer[lead - r * c:lead - r * c + size])  # W[a, b] + W[a-1, b]
    kernel.add_(buffer[lead - c:lead - c + size])                                # + W[a, b-1]
    kernel.add_(buffer[:size])                                                   # + W[a-1, b-1]
    return _as_weight(kernel.view(n, r, r, c), weight.shape[:2], channels_last)


def _valid_box_sum(grad_kernel):
    maps, channels_last = _maps(grad_kernel)
    n, r, _, c = maps.shape
    k = r - 1
    flat = maps.reshape(-1)
    # sums[f] needs flat[f + (r+1)*c]: the last (r+1)*c positions, never inside a k x k map, are left unwritten
    length = flat.numel() - (r + 1) * c
    sums = grad_kernel.new_empty(flat.numel())
    torch.add(flat[(r + 1) * c:], flat[c:c + length], out=sums[:length])  # gK[i+1, j+1] + gK[i, j+1]
    sums[:length].add_(flat[r * c:r * c + length])                         # + gK[i+1, j]
    sums[:length].add_(flat[:length])                                      # + gK[i, j]
    blocks = sums.view(n, r, r, c)
    grad_weight = grad_kernel.new_empty(n, k, k, c)
    for row in range(k):
        grad_weight[:, row].copy_(blocks[:, row, :k])
    return _as_weight(grad_weight, grad_kernel.shape[:2], channels_last)


class _ResampleKernel(torch.autograd.Function):
    @staticmethod
    def forward(weight):
        return _full_box_sum(weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_kernel):
        return _ResampleKernelAdjoint.apply(grad_kernel)


class _ResampleKernelAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(grad_kernel):
        return _valid_box_sum(grad_kernel)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_grad_weight):
        return _ResampleKernel.apply(grad_grad_weight)


def resample_kernel(weight):
    """progan_fast.reference.resample_kernel(weight) for a 4-D [O, I, k, k] weight (same values, same memory
    format), with the cheap autograd above."""
    return _ResampleKernel.apply(weight)
