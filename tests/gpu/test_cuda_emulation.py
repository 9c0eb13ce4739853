"""The CUDA kernels' launch schedules. Their device code runs as the `emulated` kernel family (every thread of
the real launch, phase by phase, on the CPU: csrc/ops/phases.h) in the shared op tests (tests/ops); here, the
schedules those tests must reach, and shapes that need more blocks or lanes than the shared shapes give."""
import pytest
import torch

from progan_fast import backends, reference
from progan_fast.ops import minibatch_stddev, pixel_norm

from ops.parity import assert_close, check_parity, layout

pytestmark = pytest.mark.skipif(not backends.available("emulated")[0], reason="progan_fast._C is not built")


def launch(x, dim=1, op="pixel_norm"):
    """The forward geometry of pixel norm (over dim) or of the epilogue (op="scaled_bias_act", over dim 1)."""
    config = torch.ops.progan_fast_emulated.pixel_norm_launch_config(x, dim) if op == "pixel_norm" else \
        torch.ops.progan_fast_emulated.scaled_bias_act_launch_config(x)
    items, blocks, lanes, items_per_block, rows, vector = config
    return dict(items=items, blocks=blocks, lanes=lanes, items_per_block=items_per_block, rows=bool(rows),
                vector=vector)


VECTOR_WIDTHS = [(torch.float64, 2), (torch.float32, 4), (torch.float16, 8), (torch.bfloat16, 8)]
CL = torch.channels_last


def misaligned(shape, dtype, memory_format=torch.contiguous_format):
    """A dense tensor one element past a 16-byte boundary: the kernels must take the scalar path."""
    like = torch.empty(shape, dtype=dtype).contiguous(memory_format=memory_format)
    storage = torch.randn(like.numel() + 1, dtype=dtype)
    x = storage[1:].as_strided(like.shape, like.stride())
    assert x.data_ptr() % 16 != 0
    return x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,dim,memory_format", [
    ((3, 67, 5, 9), 1, torch.contiguous_format),  # more channels than lanes, partial last block
    ((2, 40, 1, 3), 1, torch.channels_last),
    ((7, 1), 1, torch.contiguous_format), ((1, 33), 1, torch.contiguous_format),
    ((2, 3000), 1, torch.contiguous_format),      # a row wider than a warp's share: the whole block on one row
])
def test_schedules_beyond_the_shared_shapes(dtype, shape, dim, memory_format):
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    check_parity("emulated", lambda t: pixel_norm(t, dim=dim), lambda t: reference.pixel_norm(t, dim=dim), [x],
                 dtype, check_double_backward=False, op="pixel_norm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_one_thread_per_pixel_schedule(dtype):
    """Enough NCHW pixels to fill the GPU: one lane per pixel, no reduction steps, a partial last block."""
    x = torch.randn(1, 3, 362, 362, dtype=dtype)
    assert launch(x, 1) == dict(items=362 * 362, blocks=-(-362 * 362 // 256), lanes=1, items_per_block=256,
                                rows=False, vector=1)
    check_parity("emulated", pixel_norm, reference.pixel_norm, [x], dtype, check_double_backward=False,
                 op="pixel_norm")


def test_launch_geometry_covers_both_layouts():
    """The shapes above and in tests/ops exercise every schedule: rows with a warp per row, with fewer lanes than a
    warp and with the whole block on one row, planes with lanes splitting the channel loop, several blocks."""
    assert launch(torch.randn(5, 128), 1) == dict(items=5, blocks=1, lanes=32, items_per_block=8, rows=True,
                                                  vector=4)
    # a row of 128 vectors takes one lane per vector, 4 warps, when a warp per row would leave most SMs idle
    assert launch(torch.randn(5, 512), 1) == dict(items=5, blocks=3, lanes=128, items_per_block=2, rows=True,
                                                  vector=4)
    cl = torch.randn(2, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    assert launch(cl, 1) == dict(items=70, blocks=2, lanes=4, items_per_block=64, rows=True, vector=1)
    planes = launch(torch.randn(4, 32, 8, 8), 1)
    assert planes == dict(items=256, blocks=32, lanes=32, items_per_block=8, rows=False, vector=1)
    odd = launch(torch.randn(3, 67, 5, 9), 1)
    assert not odd["rows"] and odd["lanes"] == 64 and odd["items"] % odd["items_per_block"] != 0
    # S2/S3 NCHW: lanes grow until the grid has 512 blocks and a block's slice of x is at most 4096 elements
    assert launch(torch.empty(16, 256, 32, 32), 1) == dict(items=16384, blocks=1024, lanes=16, items_per_block=16,
                                                           rows=False, vector=1)
    assert launch(torch.empty(16, 128, 64, 64), 1) == dict(items=65536, blocks=2048, lanes=8, items_per_block=32,
                                                           rows=False, vector=1)
    # rows wider than 4096 / 8 elements get more than a warp each
    assert launch(torch.empty(2, 3000), 1) == dict(items=2, blocks=2, lanes=256, items_per_block=1, rows=True,
                                                   vector=4)


# ProGAN's small maps at C = 512, (N, H = W) -> (lanes, blocks) of pixel norm's and the epilogue's forward: NCHW
# planes, channels-last rows of float32 and of 16-bit elements (8 to a vector: fewer vectors per row, fewer lanes).
# Before csrc/ops/item_lanes.h asked for 2 blocks per SM of a 132-SM GPU, every one of them had 32 lanes: 32 blocks
# at N = 16 4x4, 128 at N = 16 8x8 and at N = 64 4x4, 512 at N = 64 8x8.
SMALL_MAPS = {
    (16, 4): dict(nchw=(256, 256), cl_float32=(128, 128), cl_16bit=(64, 64)),
    (16, 8): dict(nchw=(128, 512), cl_float32=(128, 512), cl_16bit=(64, 256)),
    (64, 4): dict(nchw=(128, 512), cl_float32=(128, 512), cl_16bit=(64, 256)),
    (64, 8): dict(nchw=(32, 512), cl_float32=(32, 512), cl_16bit=(32, 512)),
}


@pytest.mark.parametrize("op", ["pixel_norm", "scaled_bias_act"])
@pytest.mark.parametrize("n,size", list(SMALL_MAPS), ids=str)
def test_small_maps_fill_the_sms(op, n, size):
    """At least 2 blocks per SM of a 132-SM GPU where every lane keeps an access: NCHW pixels split their 512
    channels over up to 256 lanes; a channels-last row stops at one 16-byte vector per lane (64 of them for 16-bit
    elements: 64 blocks at N = 16, 4x4, all the work allows). Both ops take the same rule (hd::item_lanes)."""
    cases = dict(nchw=(torch.float32, torch.contiguous_format), cl_float32=(torch.float32, CL),
                 cl_16bit=(torch.float16, CL))
    for case, (lanes, blocks) in SMALL_MAPS[n, size].items():
        dtype, memory_format = cases[case]
        x = torch.empty(n, 512, size, size, dtype=dtype).contiguous(memory_format=memory_format)
        got = launch(x, op=op)
        assert (got["lanes"], got["blocks"]) == (lanes, blocks), (case, got)
        assert got["items"] == n * size * size and got["items_per_block"] * got["lanes"] == 256
        if case == "nchw" and blocks < 2 * 132:
            assert got["items_per_block"] == 1  # fewer blocks only where each block already has one pixel


@pytest.mark.parametrize("op", ["pixel_norm", "scaled_bias_act"])
@pytest.mark.parametrize("shape,memory_format,lanes,blocks", [
    ((9, 256, 8, 8), torch.contiguous_format, 128, 288),  # a tree of 7 halvings
    ((9, 256, 8, 8), CL, 64, 144),                        # rows of 2 warps
    ((2, 512, 3, 3), torch.contiguous_format, 256, 18),   # a pixel per block, inner 9: a tree of 8 halvings
], ids=["nchw_128_lanes", "channels_last_64_lanes", "nchw_256_lanes_inner_9"])
def test_small_map_lanes_agree_with_the_reference(op, shape, memory_format, lanes, blocks):
    """The small-map schedules tests/ops does not reach (its 4x4 and 8x8 maps of 512 channels have a pixel per
    block, whose 256 lanes add their sums as a wide row's), forward and backward, the epilogue's bias gradient over
    one row per block. A pixel per block with `inner` not a power of two takes the tree: its kernels have no
    exchange."""
    from progan_fast.ops import scaled_bias_act

    x = layout(torch.randn(shape), memory_format)
    got = launch(x, op=op)
    assert (got["lanes"], got["blocks"]) == (lanes, blocks)
    if op == "pixel_norm":
        check_parity("emulated", pixel_norm, reference.pixel_norm, [x], torch.float32, check_double_backward=False,
                     op=op)
    else:
        bias = torch.randn(shape[1])
        check_parity("emulated", lambda t, b: scaled_bias_act(t, b, 0.5, pixel_norm=True),
                     lambda t, b: reference.scaled_bias_act(t, b, 0.5, pixel_norm=True), [x, bias], torch.float32,
                     check_double_backward=False, op=op)


@pytest.mark.parametrize("dtype,vector", [(torch.float64, 2), (torch.float32, 4), (torch.float16, 8),
                                          (torch.bfloat16, 8)], ids=str)
def test_aligned_rows_move_16_bytes_per_access(dtype, vector):
    """Rows (channels_last, latents) whose length divides into 16-byte vectors take the 128-bit path, a lane per
    vector: the S2 channels_last rows of 256 channels need 64 float32 vectors (a warp, two each), 32 of half."""
    s2 = torch.empty(16, 256, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
    assert launch(s2, 1) == dict(items=16384, blocks=16384 // 8, lanes=32, items_per_block=8, rows=True,
                                 vector=vector)
    assert launch(torch.empty(3, 2 * vector, dtype=dtype), 1)["lanes"] == 2  # lanes from the vector count
    # the scalar fallback: a row length that does not divide, a misaligned tensor, planes
    assert launch(torch.empty(3, 2 * vector + 1, dtype=dtype), 1)["vector"] == 1
    assert launch(misaligned((3, 4 * vector), dtype), 1)["vector"] == 1
    assert launch(torch.empty(2, 4 * vector, 4, 4, dtype=dtype), 1)["vector"] == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,memory_format", [
    ((3, 64), torch.contiguous_format),              # 128-bit rows
    ((2, 24, 3, 5), torch.channels_last),            # 128-bit rows (24 divides by 2, 4 and 8), odd pixel count
    ((2, 40, 3, 3), torch.contiguous_format),        # planes, inner 9: divided, not shifted
])
def test_vector_and_scalar_paths_agree_with_the_reference(dtype, shape, memory_format):
    """Each tensor taking the vector path, and the same values one element off alignment (the scalar fallback),
    forward and backward; gradients of a misaligned grad_y through the raw backward op against the cpu family."""
    aligned = layout(torch.randn(shape, dtype=dtype), memory_format)
    shifted = misaligned(shape, dtype, memory_format)
    shifted.copy_(aligned)
    assert launch(shifted, 1)["vector"] == 1
    for x in (aligned, shifted):
        check_parity("emulated", pixel_norm, reference.pixel_norm, [x], dtype, check_double_backward=False,
                     op="pixel_norm")
    _, r = torch.ops.progan_fast.pixel_norm_forward(aligned, 1, 1e-8)
    grad_y = misaligned(shape, dtype, memory_format)
    expected = torch.ops.progan_fast.pixel_norm_backward(grad_y, aligned, r, 1, 1e-8)
    for x in (aligned, shifted):
        actual = torch.ops.progan_fast_emulated.pixel_norm_backward(grad_y, x, r, 1, 1e-8)
        assert_close(actual, expected, dtype, grad=True)


def test_uninitialised_shared_memory_would_show():
    """The emulation starts every block's shared memory as NaN bytes, as undefined as on the GPU: a zero-filled
    start could hide a phase that reads a slot no thread wrote. Zero vectors stay finite thanks to eps only."""
    y, r = torch.ops.progan_fast_emulated.pixel_norm_forward(torch.zeros(2, 4, 3, 3), 1, 1e-8)
    assert torch.equal(y, torch.zeros(2, 4, 3, 3)) and torch.isfinite(r).all()


@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16, 32])
def test_warp_exchange_is_the_gpu_butterfly_bit_for_bit(lanes):
    """The emulated warp exchange (csrc/ops/phases.h) against a serial xor butterfly over each warp's values
    (offsets lanes/2, ..., 1; each lane adds its partner's value from before the step), bit for bit; every lane of a
    group ends with the bits of the shared-memory tree over the group (halves lanes/2, ..., 1), which the kernels
    used before. Magnitudes from 1e-4 to 1e4, so that another order of additions would round differently."""
    g = torch.Generator().manual_seed(lanes)
    values = torch.randn(2 * 256, generator=g) * torch.pow(10.0, torch.randint(-4, 5, (512,), generator=g).float())
    out = torch.ops.progan_fast_emulated.warp_exchange_sum(values, lanes)
    expected = values.view(-1, 32)
    offset = lanes // 2
    while offset:
        expected = expected + expected[:, torch.arange(32) ^ offset]
        offset //= 2
    assert torch.equal(out, expected.reshape(-1))
    tree = values.view(-1, lanes).clone()
    half = lanes // 2
    while half:
        tree[:, :half] += tree[:, half:2 * half]
        half //= 2
    assert torch.equal(out.view(-1, lanes), tree[:, :1].expand(-1, lanes))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(5, 1000), (2, 3000), (2, 1000, 1, 3)], ids=str)
@pytest.mark.parametrize("pixel_norm", [False, True], ids=["plain", "pn"])
def test_epilogue_rows_wider_than_a_warp(dtype, shape, pixel_norm):
    """The epilogue's rows of more than 512 channels get 64 to 256 lanes (a block's slice stays within 4096
    elements): with pixel norm, each warp's exchange leaves its sums for the item's write phase to add."""
    from progan_fast.ops import scaled_bias_act

    x = layout(torch.randn(shape, dtype=dtype), torch.channels_last if len(shape) == 4 else torch.contiguous_format)
    bias = torch.randn(shape[1], dtype=dtype)
    check_parity("emulated", lambda t, b: scaled_bias_act(t, b, 0.5, pixel_norm=pixel_norm),
                 lambda t, b: reference.scaled_bias_act(t, b, 0.5, pixel_norm=pixel_norm), [x, bias], dtype,
                 check_double_backward=False, op="scaled_bias_act")


def fade_from_rgb_launch(new, image_channels=3, images=None):
    """The geometries the launchers pick for `new` (or a grad_y like it) and images (by default fresh ones of
    `image_channels` channels in new's layout and dtype)."""
    if images is None:
        n, _, h, w = new.shape
        memory_format = torch.channels_last if new.is_contiguous(memory_format=torch.channels_last) and \
            not new.is_contiguous() else torch.contiguous_format
        images = torch.empty(n, image_channels, 2 * h, 2 * w, dtype=new.dtype).contiguous(memory_format=memory_format)
    keys = ("lanes", "blocks", "pixels_per_item", "channels_per_access", "channel_lanes", "chunks", "channel_blocks",
            "channel_pixels", "groups")
    return dict(zip(keys, torch.ops.progan_fast_emulated.fade_from_rgb_launch_config(images, new)))


def test_fade_from_rgb_launch_geometry():
    """The shared op tests (tests/ops/test_fade_from_rgb.py) reach lanes splitting the channels in both layouts, and
    two image-channel groups; S2 shapes get the schedules below."""
    small = fade_from_rgb_launch(torch.empty(2, 8, 4, 4), 5)
    assert small["lanes"] == 8 and small["groups"] == 2 and small["pixels_per_item"] == 4
    cl = fade_from_rgb_launch(torch.empty(2, 16, 2, 2, dtype=torch.float64).contiguous(memory_format=CL), 3)
    assert cl["lanes"] == 8 and cl["channels_per_access"] == 2 and cl["channel_lanes"] == 8 and cl["groups"] == 1
    odd = fade_from_rgb_launch(torch.empty(3, 5, 3, 5).contiguous(memory_format=CL), 1)
    assert odd["lanes"] == 8 and odd["channels_per_access"] == 1
    # S2 NCHW: runs of 4 pixels (16384 / 4 items) fill 512 blocks with 32 lanes; the channel kernel reads a plane in
    # chunks of 4096 pixels, 4 at a time
    s2 = fade_from_rgb_launch(torch.empty(16, 256, 32, 32), 3)
    assert s2 == dict(lanes=32, blocks=512, pixels_per_item=4, channels_per_access=1, channel_lanes=256, chunks=16,
                      channel_blocks=16 * 256, channel_pixels=4, groups=1)
    # S2 channels last: a warp per pixel, 4 channels per access (64 vectors); the channel kernel stays scalar
    s2_cl = fade_from_rgb_launch(torch.empty(16, 256, 32, 32).contiguous(memory_format=CL), 3)
    assert s2_cl == dict(lanes=32, blocks=2048, pixels_per_item=1, channels_per_access=4, channel_lanes=8, chunks=128,
                         channel_blocks=128 * 256 // 32, channel_pixels=1, groups=1)
    # one element per access: the geometry without vectors (float32 S2 NCHW: 8 lanes per pixel, as before vectors)
    s2_scalar = fade_from_rgb_launch(misaligned((16, 256, 32, 32), torch.float32), 3)
    assert s2_scalar == dict(lanes=8, blocks=512, pixels_per_item=1, channels_per_access=1, channel_lanes=256,
                             chunks=16, channel_blocks=16 * 256, channel_pixels=1, groups=1)
    # a small map keeps one pixel per item: runs of 4 would leave 8 blocks of the 32 (the channel kernel's grid does
    # not depend on its vectors)
    small_map = fade_from_rgb_launch(torch.empty(16, 512, 4, 4), 3)
    assert small_map == dict(lanes=256, blocks=256, pixels_per_item=1, channels_per_access=1, channel_lanes=256,
                             chunks=16, channel_blocks=16 * 512, channel_pixels=4, groups=1)
    # small NCHW maps split a pixel over lanes as pixel norm does (csrc/ops/item_lanes.h; 32 and 128 blocks before);
    # channels last keeps at most a warp per pixel, whose lanes add their sums in one exchange
    assert fade_from_rgb_launch(torch.empty(16, 512, 8, 8), 3)["blocks"] == 512
    small_cl = fade_from_rgb_launch(torch.empty(16, 512, 4, 4).contiguous(memory_format=CL), 3)
    assert (small_cl["lanes"], small_cl["blocks"]) == (32, 32)
    # runs of pixels keep at most a warp of lanes (each lane pools every pixel of its run): 8x8 at N = 64 in float16
    # would fill 512 blocks with runs of 8 pixels only over 256 lanes; single pixels fill them with 32
    runs = fade_from_rgb_launch(torch.empty(64, 512, 8, 8, dtype=torch.float16), 3)
    assert (runs["pixels_per_item"], runs["lanes"], runs["blocks"]) == (1, 32, 512)


@pytest.mark.parametrize("dtype,vector", VECTOR_WIDTHS, ids=str)
def test_fade_from_rgb_moves_16_bytes_per_access(dtype, vector):
    """Where H * W is a power of two: NCHW items are runs of 16 bytes of a feature row (W divides; the images are
    read and written two vectors per image row), in the channel kernel and in the pixel kernels where the grid keeps
    its blocks (up to 512); channels-last lanes take 16 bytes of a pixel's channels (C divides). Otherwise, or with a
    misaligned tensor, one element per access."""
    nchw = torch.empty(1, 8, 4, vector, dtype=dtype)
    got = fade_from_rgb_launch(nchw)
    assert (got["pixels_per_item"], got["channels_per_access"], got["channel_pixels"]) == (vector, 1, vector)
    assert (got["lanes"], got["blocks"]) == (8, 1)  # 4 runs of a feature row, 8 channels
    cl = torch.empty(2, 2 * vector, 4, 4, dtype=dtype).contiguous(memory_format=CL)
    got = fade_from_rgb_launch(cl)
    assert (got["pixels_per_item"], got["channels_per_access"], got["channel_pixels"]) == (1, vector, 1)
    assert got["lanes"] == 2  # a lane per vector of channels

    def paths(new, **kwargs):
        got = fade_from_rgb_launch(new, **kwargs)
        return got["pixels_per_item"], got["channels_per_access"], got["channel_pixels"]

    scalar = (1, 1, 1)
    assert paths(torch.empty(2, 8, 4, vector // 2, dtype=dtype)) == scalar  # W does not divide
    # H * W not a power of two: the pixel kernels divide by it, the channel kernel does not
    assert paths(torch.empty(2, 8, 3, vector, dtype=dtype)) == (1, 1, vector)
    assert paths(misaligned((1, 8, 4, vector), dtype)) == scalar
    assert paths(nchw, images=misaligned((1, 3, 8, 2 * vector), dtype)) == scalar
    assert paths(torch.empty(1, 6, 4, vector, dtype=dtype)) == (vector, 1, 1)  # C not a power of two: the channel
    # kernel divides by it
    # runs that would shrink the grid (64 blocks of one pixel per item): the pixel kernels take one pixel
    assert paths(torch.empty(16, 512, 4, 8, dtype=dtype)) == (1, 1, vector)
    assert paths(torch.empty(2, 2 * vector + 1, 4, 4, dtype=dtype).contiguous(memory_format=CL)) == scalar
    assert paths(misaligned((2, 2 * vector, 4, 4), dtype, CL)) == scalar
    # channels last reads the images one value at a time: their alignment does not matter
    assert paths(cl, images=misaligned((2, 3, 8, 8), dtype, CL)) == (1, vector, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,memory_format", [
    ((1, 8, 4, 8, 3), torch.contiguous_format),  # NCHW runs of 2, 4 and 8 pixels: W = 8 divides
    ((1, 4, 2, 8, 5), torch.contiguous_format),  # runs over two image-channel groups (C_img beyond kGroup)
    ((2, 24, 2, 4, 3), CL),                      # channels-last vectors, 24 channels: 12, 6 or 3 vectors
    ((1, 16, 2, 2, 5), CL),
], ids=str)
def test_fade_from_rgb_vector_and_scalar_paths_agree_with_the_reference(dtype, shape, memory_format):
    """fade_from_rgb with every tensor aligned (the vector paths) and with `new` and the images one element off
    alignment (the scalar fallback), forward and backward against the reference; the raw backward op with grad_y in
    the op's layout, aligned and not, against the cpu family."""
    from progan_fast.ops import fade_from_rgb

    n, c, h, w, c_img = shape
    aligned = [layout(torch.randn(n, c_img, 2 * h, 2 * w, dtype=dtype), memory_format),
               layout(torch.randn(n, c, h, w, dtype=dtype), memory_format),
               torch.randn(c, c_img, 1, 1, dtype=dtype), torch.randn(c, dtype=dtype)]
    shifted = [misaligned(t.shape, dtype, memory_format) for t in aligned[:2]] + aligned[2:]
    for s, a in zip(shifted, aligned):
        s.copy_(a)
    vector = dict(VECTOR_WIDTHS)[dtype]
    path = fade_from_rgb_launch(aligned[1], images=aligned[0])
    assert (path["pixels_per_item"], path["channels_per_access"]) == ((1, vector) if memory_format == CL else
                                                                      (vector, 1))
    path = fade_from_rgb_launch(shifted[1], images=shifted[0])
    assert path["pixels_per_item"] == path["channels_per_access"] == path["channel_pixels"] == 1
    for inputs in (aligned, shifted):
        check_parity("emulated", lambda i, nw, wt, b: fade_from_rgb(i, nw, wt, b, 0.3, negative_slope=0.1),
                     lambda i, nw, wt, b: reference.fade_from_rgb(i, nw, wt, b, 0.3, negative_slope=0.1), inputs,
                     dtype, check_double_backward=False, op="fade_from_rgb", layout_input=1)

    alpha, floats = torch.tensor(0.3), (0.7, 1.1, 0.1)
    grad_y = layout(torch.randn(n, c, h, w, dtype=dtype), memory_format)
    grad_y_shifted = misaligned(grad_y.shape, dtype, memory_format)
    grad_y_shifted.copy_(grad_y)
    expected = torch.ops.progan_fast.fade_from_rgb_backward(grad_y, *aligned[:1], *aligned[2:], alpha, *floats)
    for g, images in ((grad_y, aligned[0]), (grad_y_shifted, aligned[0]), (grad_y, shifted[0])):
        actual = torch.ops.progan_fast_emulated.fade_from_rgb_backward(g, images, *aligned[2:], alpha, *floats)
        for a, e in zip(actual, expected):
            assert_close(a, e, dtype, grad=True)


def test_fade_from_rgb_small_map_lanes():
    """A 4x4 NCHW map of 512 channels: 256 lanes per pixel (the pixel backward's tree of 8 halvings, every lane
    pooling its pixel's image values), against the reference."""
    from progan_fast.ops import fade_from_rgb

    new = torch.randn(4, 512, 4, 4)
    got = fade_from_rgb_launch(new, 3)
    assert (got["lanes"], got["blocks"], got["pixels_per_item"]) == (256, 64, 1)
    inputs = [torch.randn(4, 3, 8, 8), new, torch.randn(512, 3, 1, 1), torch.randn(512)]
    check_parity("emulated", lambda i, n, w, b: fade_from_rgb(i, n, w, b, 0.3),
                 lambda i, n, w, b: reference.fade_from_rgb(i, n, w, b, 0.3), inputs, torch.float32,
                 check_double_backward=False, op="fade_from_rgb", layout_input=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_fade_from_rgb_one_lane_per_pixel(dtype):
    """Enough NCHW pixels to fill the GPU: one lane per pixel (no reduction steps), chunks of a plane that end
    inside it, a partial last block."""
    from progan_fast.ops import fade_from_rgb

    new = torch.randn(1, 2, 362, 362, dtype=dtype)
    assert fade_from_rgb_launch(new, 3)["lanes"] == 1
    inputs = [torch.randn(1, 3, 724, 724, dtype=dtype), new, torch.randn(2, 3, 1, 1, dtype=dtype),
              torch.randn(2, dtype=dtype)]
    check_parity("emulated", lambda i, n, w, b: fade_from_rgb(i, n, w, b, 0.3),
                 lambda i, n, w, b: reference.fade_from_rgb(i, n, w, b, 0.3), inputs, dtype,
                 check_double_backward=False, op="fade_from_rgb", layout_input=1)


# ---- minibatch stddev ----

def mbstd_launch(x, group_size=4, grouping="strided", unbiased=False, features=1):
    blocks, chunk, write_blocks, vector, vector_y, slices, stat_vector = \
        torch.ops.progan_fast_emulated.minibatch_stddev_launch_config(x, group_size, grouping, unbiased, features)
    return dict(blocks=blocks, chunk=chunk, write_blocks=write_blocks, vector=vector, vector_y=bool(vector_y),
                slices=slices, stat_vector=stat_vector)


def test_minibatch_stddev_launch_geometry():
    """Position blocks take 16 bytes of x per access (runs of 4 float32 positions) where the grid keeps its blocks,
    and shrink from 16 to 1 access per thread until it has 512 blocks; below that, their threads split the group's
    members into up to min(G, 8) slices of whole warps. The statistic channels are written 1024 pixels a block,
    16 bytes per store in NCHW where H * W divides into them."""
    # 4x4 at N = 16: runs of 4 positions would leave 32 blocks of the 128 one position per access gives; 4 member
    # slices of 64 threads make 512
    assert mbstd_launch(torch.empty(16, 512, 4, 4)) == dict(blocks=512, chunk=64, write_blocks=16, vector=1,
                                                            vector_y=False, slices=4, stat_vector=4)
    # N = 64 and 128: 512 blocks of one and two positions per thread, no slices
    assert mbstd_launch(torch.empty(64, 512, 4, 4)) == dict(blocks=512, chunk=256, write_blocks=64, vector=1,
                                                            vector_y=False, slices=1, stat_vector=4)
    assert mbstd_launch(torch.empty(128, 512, 4, 4)) == dict(blocks=512, chunk=512, write_blocks=128, vector=1,
                                                             vector_y=False, slices=1, stat_vector=4)
    # 8x8 at N = 16: 512 blocks of one position per thread
    assert mbstd_launch(torch.empty(16, 512, 8, 8)) == dict(blocks=512, chunk=256, write_blocks=16, vector=1,
                                                            vector_y=False, slices=1, stat_vector=4)
    # groups of 2 allow 2 slices; a group of 8 (N = 8) 8 slices of a warp: its 8192 positions in 256 blocks of 32
    assert mbstd_launch(torch.empty(16, 512, 4, 4), group_size=2)["slices"] == 2
    assert mbstd_launch(torch.empty(8, 512, 4, 4), group_size=8) == dict(blocks=256, chunk=32, write_blocks=8,
                                                                         vector=1, vector_y=False, slices=8,
                                                                         stat_vector=4)
    # S2: two accesses of 4 positions per thread fill 512 blocks; y's runs are vectors too
    s2 = dict(blocks=512, chunk=2048, write_blocks=16, vector=4, vector_y=True, slices=1, stat_vector=4)
    assert mbstd_launch(torch.empty(16, 256, 32, 32)) == s2
    # channels last: a pixel of y is C + 1 values, so its runs of x's channels are not 16-byte aligned there, and
    # a pixel's statistic lies C + 1 elements from the next one's
    assert mbstd_launch(torch.empty(16, 256, 32, 32).contiguous(memory_format=CL)) == dict(s2, vector_y=False,
                                                                                           stat_vector=1)
    # without vectors (misaligned x), one position per access: 8 of them per thread for 512 blocks
    assert mbstd_launch(misaligned((16, 256, 32, 32), torch.float32)) == dict(s2, vector=1, vector_y=False)
    # K = 4 * 33 * 33 divides into vectors, but its 5 chunks of 1024 are not a power of two: scalar index math and
    # accesses (4 slices of the group of 4)
    assert mbstd_launch(torch.empty(4, 8, 33, 33), features=2) == dict(blocks=2 * 69, chunk=64,
                                                                       write_blocks=4 * 2 * 2, vector=1,
                                                                       vector_y=False, slices=4, stat_vector=1)


@pytest.mark.parametrize("dtype,vector", VECTOR_WIDTHS, ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_minibatch_stddev_moves_16_bytes_per_access(dtype, vector, memory_format):
    """Runs of 16 bytes of x where K (and, channels last, C / F) divides into them, of y too where (C + F) * H * W
    does in NCHW and C + F in channels last (18: float64's pairs only); one element per access for a misaligned x.
    The emulated kernels of each path match the reference (forward and backward), with two channel groups and four
    member slices."""
    x = layout(torch.randn(8, 16, 4, 4, dtype=dtype), memory_format)
    nchw = memory_format == torch.contiguous_format
    assert mbstd_launch(x, features=2) == dict(blocks=2 * 2, chunk=64 * vector, write_blocks=8 * 2, vector=vector,
                                               vector_y=nchw or vector == 2, slices=4,
                                               stat_vector=vector if nchw else 1)
    odd = misaligned((8, 16, 4, 4), dtype, memory_format)
    assert mbstd_launch(odd, features=2)["vector"] == 1

    def fn(t):
        return minibatch_stddev(t, 4, "strided", False, 1e-8, 2)

    def ref(t):
        return reference.minibatch_stddev(t, 4, "strided", False, 1e-8, 2)

    for t in (x, odd):
        check_parity("emulated", fn, ref, [t], dtype, check_double_backward=False, op="minibatch_stddev")


@pytest.mark.parametrize("dtype,vector", VECTOR_WIDTHS, ids=str)
def test_minibatch_stddev_vectors_of_y_and_its_statistic_channels(dtype, vector):
    """Channels-last runs of y and grad_y are 16-byte vectors where C + F divides into them as C / F does (C = F =
    16 bytes of elements); the statistic channels are vectors in NCHW where H * W divides into them, single
    elements at 3x5 and for a misaligned grad_y. Each path against the reference, and the raw backward's vector
    and scalar statistic paths against the cpu family."""
    def paths(x, features):
        got = mbstd_launch(x, features=features)
        return got["vector"], got["vector_y"], got["stat_vector"]

    def fn(features):
        return lambda t: minibatch_stddev(t, 4, "strided", False, 1e-8, features)

    def ref(features):
        return lambda t: reference.minibatch_stddev(t, 4, "strided", False, 1e-8, features)

    cl = layout(torch.randn(8, vector * vector, 4, 4, dtype=dtype), CL)
    odd_map = torch.randn(8, 6, 3, 5, dtype=dtype)
    nchw = torch.randn(8, 2 * vector, 4, 4, dtype=dtype)
    assert paths(cl, vector) == (vector, True, 1)
    assert paths(odd_map, 2) == (1, False, 1)
    assert paths(nchw, 2) == (vector, True, vector)
    for x, features in ((cl, vector), (odd_map, 2), (nchw, 2)):
        check_parity("emulated", fn(features), ref(features), [x], dtype, check_double_backward=False,
                     op="minibatch_stddev")

    grad_y = torch.randn(8, 2 * vector + 2, 4, 4, dtype=dtype)
    shifted = misaligned(grad_y.shape, dtype)
    shifted.copy_(grad_y)
    expected = torch.ops.progan_fast.minibatch_stddev_backward(grad_y, nchw, 4, "strided", False, 1e-8, 2)
    for g in (grad_y, shifted):
        actual = torch.ops.progan_fast_emulated.minibatch_stddev_backward(g, nchw, 4, "strided", False, 1e-8, 2)
        assert_close(actual, expected, dtype, grad=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
@pytest.mark.parametrize("shape,group_size,grouping,features", [
    ((4, 8, 33, 33), 4, "strided", 2),      # partial last position block, two blocks of statistic pixels
    ((2, 64, 33, 33), 2, "contiguous", 1),  # 545 partial sums per group: more than a block's threads
    ((4, 256, 16, 16), 2, "strided", 256),  # 512 blocks: one member slice (NCHW: 16-byte runs)
])
def test_minibatch_stddev_schedules_beyond_the_shared_shapes(dtype, memory_format, shape, group_size, grouping,
                                                              features):
    unbiased = grouping == "contiguous"
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    launch = mbstd_launch(x, group_size, grouping, unbiased, features)
    assert launch["blocks"] > 1 and launch["slices"] == (1 if features == 256 else group_size)

    def fn(t):
        return minibatch_stddev(t, group_size, grouping, unbiased, 1e-8, features)

    def ref(t):
        return reference.minibatch_stddev(t, group_size, grouping, unbiased, 1e-8, features)

    check_parity("emulated", fn, ref, [x], dtype, check_double_backward=False, op="minibatch_stddev")


# ---- fade-in blends ----

def fade_reals_launch(x):
    blocks, vector, rows = torch.ops.progan_fast_emulated.fade_reals_launch_config(x)
    return dict(blocks=blocks, vector=vector, rows=bool(rows))


def upsample_blend_launch(low, high, factor):
    blocks, vector, pixels = torch.ops.progan_fast_emulated.upsample_blend_launch_config(low, high, factor)
    return dict(blocks=blocks, vector=vector, pixels=bool(pixels))




@pytest.mark.parametrize("dtype,vector", VECTOR_WIDTHS, ids=str)
def test_fade_units_move_16_bytes_per_access(dtype, vector):
    """NCHW rows that divide into 16-byte vectors, and channels_last pixels whose channels do, take the 128-bit
    path (powers of two only); RGB pixels, odd widths and misaligned tensors the scalar one."""
    nchw = torch.empty(2, 3, 4, 16, dtype=dtype)
    assert fade_reals_launch(nchw) == dict(blocks=-(-2 * 3 * 2 * 16 // vector // 256), vector=vector, rows=True)
    assert fade_reals_launch(torch.empty(2, 16, 4, 8, dtype=dtype).contiguous(memory_format=CL)) == dict(
        blocks=1, vector=vector, rows=False)
    rgb = torch.empty(2, 3, 4, 8, dtype=dtype).contiguous(memory_format=CL)
    for scalar in (rgb, torch.empty(2, 3, 4, 6, dtype=dtype), misaligned((2, 3, 4, 16), dtype)):
        assert fade_reals_launch(scalar)["vector"] == 1

    low, high = torch.empty(2, 3, 4, 8, dtype=dtype), torch.empty(2, 3, 8, 16, dtype=dtype)
    assert upsample_blend_launch(low, high, 2) == dict(blocks=-(-high.numel() // vector // 256), vector=vector,
                                                       pixels=False)
    cl_low = torch.empty(2, 16, 2, 2, dtype=dtype).contiguous(memory_format=CL)
    cl_high = torch.empty(2, 16, 4, 4, dtype=dtype).contiguous(memory_format=CL)
    assert upsample_blend_launch(cl_low, cl_high, 2) == dict(blocks=1, vector=vector, pixels=True)
    rgb_low = torch.empty(2, 3, 2, 2, dtype=dtype).contiguous(memory_format=CL)
    rgb_high = torch.empty(2, 3, 4, 4, dtype=dtype).contiguous(memory_format=CL)
    assert upsample_blend_launch(rgb_low, rgb_high, 2)["vector"] == 1
    assert upsample_blend_launch(low, misaligned((2, 3, 8, 16), dtype), 2)["vector"] == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,memory_format", [
    ((2, 3, 4, 16), torch.contiguous_format),  # rows unit
    ((2, 16, 4, 8), CL),                       # pixels unit
    ((2, 3, 4, 6), torch.contiguous_format),   # width 6: divided, not shifted
], ids=str)
def test_fade_vector_and_scalar_paths_agree_with_the_reference(dtype, shape, memory_format):
    """fade_reals over each unit and the same values one element off alignment (the scalar fallback), and
    upsample_blend with the high tensor of that shape, aligned and not."""
    from progan_fast.ops import fade_reals, upsample_blend

    aligned = layout(torch.randn(shape, dtype=dtype), memory_format)
    shifted = misaligned(shape, dtype, memory_format)
    shifted.copy_(aligned)
    assert fade_reals_launch(shifted)["vector"] == 1
    n, c, h, w = shape
    low = layout(torch.randn(n, c, h // 2, w // 2, dtype=dtype), memory_format)
    for x in (aligned, shifted):
        check_parity("emulated", lambda t: fade_reals(t, 0.3), lambda t: reference.fade_reals(t, 0.3), [x], dtype,
                     check_double_backward=False, op="fade_reals")
        check_parity("emulated", lambda lo, hi: upsample_blend(lo, hi, 0.6, 2),
                     lambda lo, hi: reference.upsample_blend(lo, hi, 0.6, 2), [low, x], dtype,
                     check_double_backward=False, op="upsample_blend", layout_input=1)
