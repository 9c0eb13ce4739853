"""The fused convs' summed kernel as the ops build it (progan_fast.ops._resample_kernel) against the spec,
progan_fast.reference.resample_kernel: the same values and gradients, bit for bit, in every layout."""
import pytest
import torch

from progan_fast import reference
from progan_fast.ops import _resample_kernel, eq_conv

LAYOUTS = [torch.contiguous_format, torch.channels_last]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(48, 40, 3, 3), (5, 7, 1, 1), (3, 2, 5, 5), (1, 1, 3, 3), (0, 4, 3, 3)], ids=str)
def test_kernel_and_gradient_equal_reference_bitwise(shape, dtype, memory_format):
    # The terms are added in the reference's order (its forward's, and its autograd's accumulation of the slice
    # gradients), so no tolerance is needed.
    w = torch.randn(shape, dtype=dtype).contiguous(memory_format=memory_format).requires_grad_(True)
    expected = reference.resample_kernel(w)
    kernel = _resample_kernel.resample_kernel(w)
    assert torch.equal(kernel, expected)
    assert kernel.stride() == expected.stride() or kernel.numel() == 0
    grad_kernel = torch.randn(expected.shape, dtype=dtype).contiguous(memory_format=memory_format)
    got, = torch.autograd.grad(kernel, w, grad_kernel)
    want, = torch.autograd.grad(expected, w, grad_kernel)
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=memory_format) or got.numel() == 0


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(48, 40, 3, 3), (5, 7, 1, 1), (3, 2, 5, 5), (0, 4, 3, 3)], ids=str)
def test_transposed_kernel_and_gradient_equal_reference_bitwise(shape, dtype, memory_format):
    # The up conv's weight, built flipped: the terms in reverse order, which is the reference's order read flipped.
    w = torch.randn(shape, dtype=dtype).contiguous(memory_format=memory_format).requires_grad_(True)
    expected = reference.resample_kernel(w).flip(-1, -2).transpose(0, 1)
    kernel = _resample_kernel.transposed_resample_kernel(w)
    assert torch.equal(kernel, expected)
    assert kernel.is_contiguous()
    grad_kernel = torch.randn(expected.shape, dtype=dtype)
    got, = torch.autograd.grad(kernel, w, grad_kernel)
    want, = torch.autograd.grad(expected, w, grad_kernel)
    assert torch.equal(got, want)


def test_gradient_of_non_dense_grad_kernel():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    grad_kernel = torch.randn(3, 4, 4, 4).transpose(0, 1)  # neither contiguous nor channels_last
    got, = torch.autograd.grad(_resample_kernel.resample_kernel(w), w, grad_kernel)
    want, = torch.autograd.grad(reference.resample_kernel(w), w, grad_kernel)
    assert torch.equal(got, want)


@pytest.mark.parametrize("fn", [_resample_kernel.resample_kernel, _resample_kernel.transposed_resample_kernel],
                         ids=["kernel", "transposed"])
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("k", [1, 3])
def test_gradcheck_gradgradcheck(k, memory_format, fn):
    w = torch.randn(2, 3, k, k, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (w,))
    assert torch.autograd.gradgradcheck(fn, (w,))


@pytest.mark.parametrize("transposed", [False, True])
def test_third_order_equals_reference(transposed):
    # The op is linear: differentiating its backward's backward again must give the reference's values too.
    def reference_kernel(w):
        kernel = reference.resample_kernel(w)
        return kernel.flip(-1, -2).transpose(0, 1) if transposed else kernel

    def third(fn, w, grad_kernel, grad_grad_weight, grad_3):
        gk = grad_kernel.clone().requires_grad_(True)
        gw, = torch.autograd.grad(fn(w), w, gk, create_graph=True)
        gg = grad_grad_weight.clone().requires_grad_(True)
        ggk, = torch.autograd.grad(gw, gk, gg, create_graph=True)
        return torch.autograd.grad(ggk, gg, grad_3)[0]

    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    kernel_shape = (2, 3, 4, 4) if transposed else (3, 2, 4, 4)
    grad_kernel, grad_grad_weight = torch.randn(kernel_shape), torch.randn(3, 2, 3, 3)
    grad_3 = torch.randn(kernel_shape)
    fn = _resample_kernel.transposed_resample_kernel if transposed else _resample_kernel.resample_kernel
    assert torch.equal(third(fn, w, grad_kernel, grad_grad_weight, grad_3),
                       third(reference_kernel, w, grad_kernel, grad_grad_weight, grad_3))


def test_meta():
    w = torch.empty(4, 5, 3, 3, device="meta", requires_grad=True)
    kernel = _resample_kernel.resample_kernel(w)
    assert kernel.shape == (4, 5, 4, 4) and kernel.device.type == "meta"
    kernel.sum().backward()
    assert w.grad.shape == w.shape


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("up,down", [(True, False), (False, True)])
def test_fused_conv_equals_reference_bitwise(up, down, memory_format):
    # The ops' fused conv is the reference's op for op, only the kernel built differently: output and gradients
    # are the reference's bit for bit.
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=memory_format).requires_grad_(True)
    w = torch.randn(4, 6, 3, 3, requires_grad=True)

    def output_and_grads(conv2d_resample):
        y = conv2d_resample(x, w, up, down)
        grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
        return (y,) + torch.autograd.grad(y, (x, w), grad_y)

    for got, want in zip(output_and_grads(eq_conv._conv2d_resample), output_and_grads(reference.conv2d_resample)):
        assert torch.equal(got, want)
