"""The CUDA kernels' device code, run on the CPU: csrc/cpu/cuda_emulation.cpp executes the per-thread phase
functions of csrc/ops/pixel_norm.h for every thread of the launch the real launcher makes (phase by phase, as
the block barriers order them), and the result must match progan_fast.reference."""
import pytest
import torch

from progan_fast import backends, reference

from ops.parity import assert_close, layout

pytestmark = pytest.mark.skipif(not backends.available("cpu")[0], reason="progan_fast._C is not built")

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [torch.contiguous_format, torch.channels_last]
# Odd sizes: C=1, C=3, H=W=1, non-powers of two, more channels than lanes, several blocks with a partial last one.
SHAPES = [(2, 3, 5, 7), (3, 1, 4, 4), (2, 16, 1, 1), (4, 32, 8, 8), (1, 5, 3, 2), (3, 67, 5, 9), (2, 40, 1, 3)]


def emulate(x, dim, eps=1e-8):
    return torch.ops.progan_fast._emulate_cuda_pixel_norm_forward(x, dim, eps)


def launch(x, dim):
    items, blocks, lanes, items_per_block, rows = torch.ops.progan_fast._emulate_cuda_pixel_norm_launch_config(x, dim)
    return dict(items=items, blocks=blocks, lanes=lanes, items_per_block=items_per_block, rows=bool(rows))


def check(x, dim, eps=1e-8):
    """Forward (y and the saved rsqrt) and backward of the emulated kernels against the float64 reference."""
    dtype = x.dtype
    ref_x = x.detach().double().requires_grad_()
    ref_y = reference.pixel_norm(ref_x, dim, eps)
    y, r = emulate(x, dim, eps)
    assert y.dtype == dtype and y.shape == x.shape
    assert r.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    expected_format = torch.channels_last if (x.dim() == 4 and dim % 4 == 1 and not x.is_contiguous()
                                              and x.is_contiguous(memory_format=torch.channels_last)) else None
    if expected_format is not None:
        assert y.is_contiguous(memory_format=expected_format)
    else:
        assert y.is_contiguous()
    assert_close(y, ref_y, dtype)
    ref_r = torch.rsqrt(ref_x.detach().square().mean(dim, keepdim=True) + eps)
    assert_close(r, ref_r, r.dtype)  # computed in float32/64 from exactly representable inputs

    dy = torch.randn(x.shape, dtype=torch.float64).to(dtype)
    dy = layout(dy, torch.channels_last if expected_format is not None else torch.contiguous_format)
    (ref_dx,) = torch.autograd.grad(ref_y, ref_x, dy.double())
    dx = torch.ops.progan_fast._emulate_cuda_pixel_norm_backward(dy, x, r, dim)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, ref_dx, dtype, grad=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_emulated_kernels_match_reference_4d(dtype, memory_format, shape):
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    check(x, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", [((6, 9), 1), ((5, 512), -1), ((3, 4, 7), 1), ((3, 4, 7), 2),
                                       ((2, 3, 4, 5), 3), ((7, 1), 1), ((1, 33), 1), ((2, 3000), 1)])
def test_emulated_kernels_match_reference_any_dim(dtype, shape, dim):
    check(torch.randn(shape, dtype=dtype), dim)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_one_thread_per_pixel_schedule(dtype):
    """Enough NCHW pixels to fill the GPU: one lane per pixel, no reduction steps, a partial last block."""
    x = torch.randn(1, 3, 362, 362, dtype=dtype)
    cfg = launch(x, 1)
    assert cfg == dict(items=362 * 362, blocks=-(-362 * 362 // 256), lanes=1, items_per_block=256, rows=False)
    check(x, 1)


def test_launch_geometry_covers_both_layouts():
    """The shapes above exercise every schedule: rows with a warp per row, with fewer lanes than a warp and with
    the whole block on one row, planes with lanes splitting the channel loop, and more blocks than one."""
    assert launch(torch.randn(5, 512), 1) == dict(items=5, blocks=1, lanes=32, items_per_block=8, rows=True)
    cl = torch.randn(2, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    assert launch(cl, 1) == dict(items=70, blocks=2, lanes=4, items_per_block=64, rows=True)
    planes = launch(torch.randn(4, 32, 8, 8), 1)
    assert planes == dict(items=256, blocks=32, lanes=32, items_per_block=8, rows=False)
    odd = launch(torch.randn(3, 67, 5, 9), 1)
    assert not odd["rows"] and odd["lanes"] == 32 and odd["items"] % odd["items_per_block"] != 0
    # S2/S3 NCHW: lanes grow until the grid has 512 blocks and a block's slice of x is at most 4096 elements
    assert launch(torch.empty(16, 256, 32, 32), 1) == dict(items=16384, blocks=1024, lanes=16, items_per_block=16,
                                                           rows=False)
    assert launch(torch.empty(16, 128, 64, 64), 1) == dict(items=65536, blocks=2048, lanes=8, items_per_block=32,
                                                           rows=False)
    # rows wider than 4096 / 8 elements get more than a warp each
    assert launch(torch.empty(2, 3000), 1) == dict(items=2, blocks=2, lanes=256, items_per_block=1, rows=True)


def test_eps_keeps_zero_vectors_finite():
    x = torch.zeros(2, 4, 3, 3)
    y, r = emulate(x, 1)
    assert torch.equal(y, x)
    assert torch.isfinite(r).all()
    check(torch.full((1, 4, 2, 2), 1e-3), 1, eps=1e-4)


def test_inputs_not_mutated():
    x = torch.randn(2, 6, 3, 5)
    dy = torch.randn_like(x)
    before = (x.clone(), dy.clone())
    _, r = emulate(x, 1)
    r_before = r.clone()
    torch.ops.progan_fast._emulate_cuda_pixel_norm_backward(dy, x, r, 1)
    assert torch.equal(x, before[0]) and torch.equal(dy, before[1]) and torch.equal(r, r_before)
