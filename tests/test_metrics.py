import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import torch
import torch.nn.functional as F

from progan_fast.images import to_uint8
from progan_fast.metrics import ms_ssim, sliced_wasserstein
from progan_fast.metrics import nearest_neighbour_distances
from progan_fast.metrics.swd import _normalize, _swd, laplacian_pyramid, pyr_down, pyr_up
from progan_fast.train.data import MultiResDataset, default_dataset

BINOMIAL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float64) / 256.0


def _scipy_down(x):
    return scipy.ndimage.convolve(x, BINOMIAL[None, None], mode="mirror")[:, :, ::2, ::2]


def _scipy_up(x):
    n, c, h, w = x.shape
    z = np.zeros((n, c, 2 * h, 2 * w))
    z[:, :, ::2, ::2] = x
    return scipy.ndimage.convolve(z, 4.0 * BINOMIAL[None, None], mode="mirror")


@pytest.fixture(scope="module")
def shapes32(tmp_path_factory):
    path = default_dataset(tmp_path_factory.mktemp("shapes") / "s32", resolution=32, progress=False)
    return torch.from_numpy(np.array(MultiResDataset(path).images(5)))


def test_pyramid_matches_scipy_mirror_reference():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 32, 32)) * 255.0
    xt = torch.from_numpy(x).float()
    np.testing.assert_allclose(pyr_down(xt).numpy(), _scipy_down(x), atol=1e-3)
    np.testing.assert_allclose(pyr_up(xt[:, :, :16, :8]).numpy(), _scipy_up(x[:, :, :16, :8]), atol=1e-3)
    levels = laplacian_pyramid(xt, 3)
    g1 = _scipy_down(x)
    g2 = _scipy_down(g1)
    expected = [x - _scipy_up(g1), g1 - _scipy_up(g2), g2]  # the last level is the low-pass itself
    assert [lvl.shape[-1] for lvl in levels] == [32, 16, 8]
    for got, want in zip(levels, expected):
        np.testing.assert_allclose(got.numpy(), want, atol=2e-3)


def test_pyramid_border_is_mirror_without_edge_repeat():
    # An impulse next to the corner: mirroring without edge repeat reflects column 1 onto column -1, so the
    # corner output sees it twice horizontally: 256 * (6/16) * (8/16) = 48 (edge-repeating reflection gives 24).
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 1] = 256.0
    assert pyr_down(x)[0, 0, 0, 0].item() == pytest.approx(48.0)
    # pyrUp of a corner impulse: 4 * 36/256 at the corner, and the mirrored zero rows/columns add nothing.
    y = torch.zeros(1, 1, 4, 4)
    y[0, 0, 0, 0] = 1.0
    assert pyr_up(y)[0, 0, 0, 0].item() == pytest.approx(0.5625)
    assert pyr_up(y)[0, 0, 0, 1].item() == pytest.approx(4 * 24 / 256)


def _blur(images, k):
    x = images.float()
    pad = (k // 2, (k - 1) // 2) * 2
    return F.avg_pool2d(F.pad(x, pad, mode="reflect"), k, 1).round().clamp(0, 255).to(torch.uint8)


def test_swd_small_for_same_distribution_and_grows_with_distortion(shapes32):
    reals, others = shapes32[:128], shapes32[128:256]
    kw = dict(num_patches=64, dir_repeats=1, dirs_per_repeat=64, seed=1)
    same = sliced_wasserstein(reals, reals, **kw)
    other = sliced_wasserstein(reals, others, **kw)
    blurred = [sliced_wasserstein(reals, _blur(others, k), **kw) for k in (3, 5, 9)]
    noise = sliced_wasserstein(reals, torch.randint(0, 256, reals.shape, dtype=torch.uint8), **kw)
    assert set(same) == {32, 16, "avg"}
    assert same["avg"] == pytest.approx(np.mean([same[32], same[16]]))
    # The same set differs from itself only through the random patch positions: the floor of the estimate.
    assert same["avg"] < 0.6 * other["avg"]
    for prev, cur in zip([other] + blurred, blurred):
        assert cur[32] > 1.2 * prev[32]  # monotone in the amount of blur at full resolution
        assert cur["avg"] > prev["avg"]
    assert noise["avg"] > 4 * other["avg"]


def test_swd_exactly_zero_when_every_patch_matches():
    # Flat-colour images: every patch of an image is the same wherever it is drawn, and every band level is 0
    # (std 0), so identical sets give identical sorted projections.
    colours = torch.randint(0, 256, (24, 3, 1, 1), dtype=torch.uint8)
    flat = colours.expand(-1, -1, 32, 32).contiguous()
    swd = sliced_wasserstein(flat, flat, num_patches=16, dir_repeats=1, dirs_per_repeat=16)
    assert swd == {32: 0.0, 16: 0.0, "avg": 0.0}
    other = sliced_wasserstein(flat, flat.flip(0)[:, [1, 2, 0]].contiguous(), num_patches=16, dir_repeats=1,
                               dirs_per_repeat=16)
    assert other[16] > 10.0 and other[32] == 0.0


def test_swd_deterministic_inputs_and_grayscale(shapes32):
    reals, fakes = shapes32[:32], shapes32[32:64]
    full = sliced_wasserstein(reals, fakes)  # the paper's parameters: 128 patches, 4 x 128 directions
    assert set(full) == {32, 16, "avg"} and all(np.isfinite(v) and v > 0 for v in full.values())
    kw = dict(num_patches=32, dir_repeats=2, dirs_per_repeat=32)
    a = sliced_wasserstein(reals, fakes, seed=3, **kw)
    assert a == sliced_wasserstein(reals.numpy(), fakes.numpy(), seed=3, **kw)
    assert a != sliced_wasserstein(reals, fakes, seed=4, **kw)
    gray_r, gray_f = reals[:, :1], fakes[:, :1]
    assert sliced_wasserstein(gray_r, gray_f, seed=5, **kw) == sliced_wasserstein(
        gray_r.expand(-1, 3, -1, -1).contiguous(), gray_f.expand(-1, 3, -1, -1).contiguous(), seed=5, **kw)


def test_swd_sort_paths_agree():
    # The GPU path sorts with torch, the CPU path with numpy: same directions, same distances.
    a, b = torch.randn(3000, 147), torch.randn(3000, 147) * 1.1 + 0.05
    with_numpy = _swd(a, b, 2, 40, torch.Generator().manual_seed(0), use_numpy=True)
    with_torch = _swd(a, b, 2, 40, torch.Generator().manual_seed(0), use_numpy=False)
    assert with_numpy == pytest.approx(with_torch, rel=1e-5)
    # Explicit: one direction, sorted projections, mean absolute difference.
    d = torch.randn(1, 147, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = (d / d.norm()).float()
    want = ((a @ d.T).sort(0).values - (b @ d.T).sort(0).values).abs().mean().item()
    assert _swd(a, b, 1, 1, torch.Generator().manual_seed(1), use_numpy=True) == pytest.approx(want, rel=1e-5)


def test_swd_of_one_dimensional_sets_is_the_wasserstein_distance():
    # In one dimension every unit direction is +-1, so each projection's sorted difference is the 1-D optimal
    # transport: |0-1| + |1-3| + |2-5| + |3-7| over 4 points = 2.5, for any number of directions, on both paths.
    a = torch.tensor([[3.0], [0.0], [2.0], [1.0]])
    b = torch.tensor([[7.0], [1.0], [5.0], [3.0]])
    for use_numpy in (True, False):
        assert _swd(a, b, 3, 5, torch.Generator().manual_seed(2), use_numpy) == pytest.approx(2.5, rel=1e-6)


def test_descriptors_normalised_per_colour_channel():
    # Channel 0 holds 1 and 3 (mean 2, std 1), channel 1 holds 10 and 30 (mean 20, std 10): both become -1 / +1.
    desc = torch.zeros(2, 2, 1, 2)
    desc[0, 0], desc[1, 0] = 1.0, 3.0
    desc[0, 1], desc[1, 1] = torch.tensor([10.0, 30.0]), torch.tensor([30.0, 10.0])
    out = _normalize(desc)
    assert out.tolist() == [[-1.0, -1.0, -1.0, 1.0], [1.0, 1.0, 1.0, -1.0]]


def test_swd_is_blind_to_a_brightness_and_contrast_change_of_one_set(shapes32):
    # Each set's descriptors are normalised with their own per-channel mean and std (the official metric), so a
    # per-channel affine change of the fakes (no clipping: values stay within 0..255) leaves every level unchanged.
    reals, fakes = shapes32[:48] // 3, shapes32[48:96] // 3
    scale = torch.tensor([2, 1, 3], dtype=torch.uint8)[None, :, None, None]
    shift = torch.tensor([30, 60, 0], dtype=torch.uint8)[None, :, None, None]
    changed = fakes * scale + shift
    assert int(changed.max()) <= 255 and torch.equal((changed - shift) // scale, fakes)
    kw = dict(num_patches=32, dir_repeats=1, dirs_per_repeat=32, seed=4)
    base = sliced_wasserstein(reals, fakes, **kw)
    assert base["avg"] > 1.0
    for key, value in sliced_wasserstein(reals, changed, **kw).items():
        assert value == pytest.approx(base[key], rel=1e-4), key


def test_nearest_neighbour_distances():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    images[1] = 3         # RMS distance 3 from image 0
    images[2, 0, 0] = 10  # two pixels of 10: RMS sqrt(200 / 4)
    images[3] = images[2]
    got = nearest_neighbour_distances(images, chunk=3)
    assert got.tolist() == pytest.approx([3.0, 3.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="N >= 2"):
        nearest_neighbour_distances(images[:1])


def test_swd_argument_errors(shapes32):
    x = shapes32[:8]
    with pytest.raises(TypeError, match="fakes must be uint8"):
        sliced_wasserstein(x, x.float())
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(x, shapes32[:9])
    with pytest.raises(ValueError, match="min_resolution"):
        sliced_wasserstein(x[:, :, :8, :8].contiguous(), x[:, :, :8, :8].contiguous())
    with pytest.raises(ValueError, match="reals must be N x C x H x W"):
        sliced_wasserstein(x[:, :2], x[:, :2])


def _official_style_ms_ssim(img1, img2):
    """NHWC float reference: fspecial window via mgrid, scipy FFT 'valid' convolution, 2x2 box pyramid."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    a, b = img1.astype(np.float64), img2.astype(np.float64)
    ssims, css = [], []
    for level in range(5):
        h, w = a.shape[1:3]
        size = min(11, h, w)
        sigma = size * 1.5 / 11
        start = -(size // 2) + (0.5 if size % 2 == 0 else 0.0)
        yy, xx = np.mgrid[start:start + size, start:start + size]
        win = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
        win = (win / win.sum())[None, :, :, None]
        conv = lambda t: scipy.signal.fftconvolve(t, win, mode="valid")  # noqa: E731
        mu1, mu2 = conv(a), conv(b)
        s11, s22, s12 = conv(a * a) - mu1 ** 2, conv(b * b) - mu2 ** 2, conv(a * b) - mu1 * mu2
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        v1, v2 = 2 * s12 + c2, s11 + s22 + c2
        ssims.append(np.mean((2 * mu1 * mu2 + c1) * v1 / ((mu1 ** 2 + mu2 ** 2 + c1) * v2), axis=(1, 2, 3)))
        css.append(np.mean(v1 / v2, axis=(1, 2, 3)))
        a = (a[:, 0::2, 0::2] + a[:, 1::2, 0::2] + a[:, 0::2, 1::2] + a[:, 1::2, 1::2]) / 4
        b = (b[:, 0::2, 0::2] + b[:, 1::2, 0::2] + b[:, 0::2, 1::2] + b[:, 1::2, 1::2]) / 4
    ssims, css = np.clip(ssims, 0, None), np.clip(css, 0, None)
    return np.mean(np.prod(css[:-1] ** weights[:-1, None], axis=0) * ssims[-1] ** weights[-1])


def test_ms_ssim_matches_reference_formula(shapes32):
    images = shapes32[:8]
    images = torch.cat([images, _blur(images, 3)], 0)[[0, 8, 1, 9, 2, 10, 3, 4, 5, 6, 7, 15]]
    got = ms_ssim(images)
    nhwc = images.numpy().transpose(0, 2, 3, 1)
    want = _official_style_ms_ssim(nhwc[0::2], nhwc[1::2])
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert ms_ssim(images, chunk_size=1) == pytest.approx(got, rel=1e-12)


def test_ms_ssim_identical_pairs_one_noise_low(shapes32):
    images = shapes32[:16].repeat_interleave(2, dim=0)
    assert ms_ssim(images) == pytest.approx(1.0, abs=1e-12)
    noise = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    assert ms_ssim(noise) < 0.1
    # Different shapes: well below identical, above independent noise.
    assert 0.0 < ms_ssim(noise) < ms_ssim(shapes32[:64]) < 0.6
    with pytest.raises(ValueError, match="even"):
        ms_ssim(shapes32[:3])
    with pytest.raises(TypeError, match="uint8"):
        ms_ssim(shapes32[:4].float())
    with pytest.raises(ValueError, match="16x16"):
        ms_ssim(shapes32[:4, :, :8, :8])


def test_to_uint8_official_mapping():
    x = torch.tensor([[-1.0, -0.5, 0.0, 0.5, 1.0, 1.2]])
    # round(x * 127.5 + 127.5), half to even, saturated: -0.5 -> 63.75 -> 64, 0.5 -> 191.25 -> 191.
    assert to_uint8(x).tolist() == [[0, 64, 128, 191, 255, 255]]
