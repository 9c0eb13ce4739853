import io
import json
import os
import stat

import numpy as np
import PIL.Image
import pytest
import torch

from progan_fast.images import save_image_grid, to_uint8
from progan_fast.train import data
from progan_fast.train.data import MultiResDataset, create_dataset, default_dataset, sample_batch


def _noise(rng, h, w, c=3):
    return rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def _box_reference(top_uint8, levels_down):
    """Official dataset-tool levels as plain block means of the top level (float64), then rint and clip."""
    c, r, _ = top_uint8.shape
    f = 2 ** levels_down
    blocks = top_uint8.astype(np.float64).reshape(c, r // f, f, r // f, f).mean(axis=(2, 4))
    return np.rint(blocks).clip(0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """Good images of several sizes and modes (with expected dataset order), plus files that must be skipped."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    arrays = {}
    arrays["a_rgb_16.png"] = _noise(rng, 16, 16)
    PIL.Image.fromarray(arrays["a_rgb_16.png"]).save(src / "a_rgb_16.png")
    gray = _noise(rng, 20, 20, c=1)
    PIL.Image.fromarray(gray, "L").save(src / "b_gray.png")
    rgba = np.dstack([_noise(rng, 24, 18), _noise(rng, 24, 18, c=1)])
    PIL.Image.fromarray(rgba, "RGBA").save(src / "c_rgba.png")
    PIL.Image.fromarray(_noise(rng, 40, 30)).save(src / "d_photo.jpg", quality=90)
    PIL.Image.fromarray(_noise(rng, 17, 33)).save(src / "e_wide.bmp")
    PIL.Image.fromarray(_noise(rng, 32, 32)).save(src / "sub" / "f_nested.webp")
    # Bad files.
    buf = io.BytesIO()
    PIL.Image.fromarray(_noise(rng, 64, 64)).save(buf, format="PNG")
    (src / "g_truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    # A truncated JPEG passes the header scan and fails only on the full decode (the second pass).
    buf = io.BytesIO()
    PIL.Image.fromarray(_noise(rng, 64, 64)).save(buf, format="JPEG")
    (src / "g_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (src / "h_empty.png").write_bytes(b"")
    (src / "i_text.jpg").write_text("this is not a JPEG")
    (src / "notes.txt").write_text("not an image either")
    good = ["a_rgb_16.png", "b_gray.png", "c_rgba.png", "d_photo.jpg", "e_wide.bmp", "sub/f_nested.webp"]
    bad = ["g_truncated.jpg", "g_truncated.png", "h_empty.png", "i_text.jpg", "notes.txt"]
    return src, good, bad, arrays, gray, rgba


def test_create_dataset_levels_modes_and_skips(image_folder, tmp_path, capsys):
    src, good, bad, arrays, gray, rgba = image_folder
    out = tmp_path / "ds"
    report = create_dataset(src, out, progress=False)
    assert "skipped 5 file(s)" in capsys.readouterr().err
    # Smallest side among the good images is 17 -> 16.
    assert report.resolution == 16 and report.num_images == len(good) and report.upscaled == 0
    assert sorted(os.path.relpath(p, src) for p, _ in report.skipped) == sorted(bad)
    assert all(reason for _, reason in report.skipped)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == data.FORMAT_VERSION and manifest["resolution"] == 16
    assert manifest["num_images"] == len(good) and manifest["channels"] == 3
    assert manifest["source"] == os.path.abspath(src)
    assert sorted(os.path.relpath(s["path"], src) for s in manifest["skipped"]) == sorted(bad)

    ds = MultiResDataset(out)
    assert (ds.resolution_log2, ds.num_channels, ds.num_images) == (4, 3, len(good))
    top = ds.images(4)
    assert isinstance(top, np.memmap) and top.dtype == np.uint8 and top.shape == (len(good), 3, 16, 16)
    # Files are taken in sorted path order, directory by directory.
    np.testing.assert_array_equal(top[0], arrays["a_rgb_16.png"].transpose(2, 0, 1))  # exact size: no resampling
    assert (top[1][0] == top[1][1]).all() and (top[1][1] == top[1][2]).all()  # grayscale tiled
    expected_gray = np.asarray(PIL.Image.fromarray(gray, "L").resize(
        (16, 16), PIL.Image.LANCZOS))
    np.testing.assert_array_equal(top[1][0], expected_gray)
    # RGBA: alpha dropped (not composited), 18x24 center-cropped to rows 3..21, then resized.
    expected_rgba = np.asarray(PIL.Image.fromarray(rgba[3:21, :, :3]).resize((16, 16), PIL.Image.LANCZOS))
    np.testing.assert_array_equal(top[2], expected_rgba.transpose(2, 0, 1))
    for k in range(2, 4):
        level = ds.images(k)
        assert level.shape == (len(good), 3, 2 ** k, 2 ** k)
        for i in range(len(good)):
            np.testing.assert_array_equal(level[i], _box_reference(np.asarray(top[i]), 4 - k))


def test_box_levels_round_from_unquantized_float(tmp_path):
    # The official tool averages the float level above, not its rounded copy. Each 4x4 tile holds 2x2 blocks
    # with means 0.5, 0.5, 0.5, 1.0: the 8x8 level rounds them to 0, 0, 0, 1 (half to even), and the 4x4 level
    # is rint(0.625) = 1, where averaging the rounded 8x8 level would give rint(0.25) = 0.
    src = tmp_path / "src"
    src.mkdir()
    tile = np.array([[0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1], [0, 1, 1, 1]], np.uint8)
    img = np.repeat(np.tile(tile, (4, 4))[:, :, None], 3, axis=2)
    PIL.Image.fromarray(img).save(src / "x.png")
    ds = MultiResDataset(create_dataset(src, tmp_path / "ds", progress=False).path)
    np.testing.assert_array_equal(ds.images(3)[0, 0], np.tile(np.array([[0, 0], [0, 1]], np.uint8), (4, 4)))
    assert (ds.images(2)[0] == 1).all()
    np.testing.assert_array_equal(ds.images(2)[0], _box_reference(np.asarray(ds.images(4)[0]), 2))


def test_create_dataset_explicit_resolution_upscales(image_folder, tmp_path):
    src, good, *_ = image_folder
    report = create_dataset(src, tmp_path / "ds", resolution=32, progress=False)
    assert report.resolution == 32 and report.num_images == len(good)
    assert report.upscaled == 5  # only the 32x32 webp is not smaller than 32 on its short side
    assert MultiResDataset(report.path).images(5).shape == (len(good), 3, 32, 32)


def test_create_dataset_is_atomic(image_folder, tmp_path, monkeypatch):
    src, *_ = image_folder
    out = tmp_path / "out" / "ds"
    calls = []
    real = data.create._load_square

    def failing(path, resolution):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # an interruption is not a bad file: it must abort the whole creation
        return real(path, resolution)

    monkeypatch.setattr(data.create, "_load_square", failing)
    with pytest.raises(KeyboardInterrupt):
        create_dataset(src, out, progress=False)
    assert not out.exists()
    assert os.listdir(out.parent) == []  # no partial temp directory left behind


def test_create_dataset_errors(image_folder, tmp_path):
    src, *_ = image_folder
    empty = tmp_path / "empty"
    (empty / "nested").mkdir(parents=True)
    (empty / "nested" / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match="no readable image"):
        create_dataset(empty, tmp_path / "o1", progress=False)
    assert not (tmp_path / "o1").exists()
    with pytest.raises(FileNotFoundError, match="src_dir"):
        create_dataset(tmp_path / "missing", tmp_path / "o2", progress=False)
    with pytest.raises(ValueError, match="resolution"):
        create_dataset(src, tmp_path / "o3", resolution=24, progress=False)
    with pytest.raises(ValueError, match="resolution"):
        create_dataset(src, tmp_path / "o3", resolution=2, progress=False)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="out_dir"):
        create_dataset(src, occupied, progress=False)
    assert (occupied / "keep.txt").read_text() == "x"
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    PIL.Image.fromarray(np.zeros((3, 9, 3), np.uint8)).save(tiny / "t.png")
    with pytest.raises(ValueError, match="at least 4"):
        create_dataset(tiny, tmp_path / "o4", progress=False)


@pytest.fixture
def noise_dataset(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "noise"
    src.mkdir()
    for i in range(10):
        PIL.Image.fromarray(_noise(rng, 16, 16)).save(src / f"{i:02d}.png")
    return MultiResDataset(create_dataset(src, tmp_path / "ds", progress=False).path)


def test_dataset_open_errors(noise_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MultiResDataset(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        MultiResDataset(tmp_path / "plain")
    with pytest.raises(ValueError, match="res_log2 must be in \\[2, 4\\]"):
        noise_dataset.images(5)
    with pytest.raises(ValueError, match="res_log2"):
        noise_dataset.images(1)
    with pytest.raises(TypeError, match="res_log2"):
        noise_dataset.images(3.0)

    path = noise_dataset.path
    manifest_path = os.path.join(path, "manifest.json")
    good = open(manifest_path).read()
    open(manifest_path, "w").write(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        MultiResDataset(path)
    bad = json.loads(good)
    bad["num_images"] = 11
    open(manifest_path, "w").write(json.dumps(bad))
    with pytest.raises(ValueError, match="expected uint8"):
        MultiResDataset(path)
    open(manifest_path, "w").write(good)
    os.unlink(os.path.join(path, "r03.npy"))
    with pytest.raises(ValueError, match="r03.npy"):
        MultiResDataset(path)


def test_sample_batch_values_and_determinism(noise_dataset):
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    first = [sample_batch(noise_dataset, 4, 8, g, mirror=True) for _ in range(3)]
    g.set_state(state)
    again = [sample_batch(noise_dataset, 4, 8, g, mirror=True) for _ in range(3)]
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert first[0].dtype == torch.float32 and first[0].shape == (8, 3, 16, 16)

    # Indices are the first draw: without mirroring the batch is exactly those images mapped to [-1, 1].
    g.set_state(state)
    batch = sample_batch(noise_dataset, 3, 8, g)
    idx = torch.randint(10, (8,), generator=torch.Generator().set_state(state)).numpy()
    expected = noise_dataset.images(3)[idx].astype(np.float32) * np.float32(2 / 255) - np.float32(1)
    np.testing.assert_array_equal(batch.numpy(), expected)
    assert batch.min() >= -1 and batch.max() <= 1
    full = sample_batch(noise_dataset, 2, 4096, g)
    assert full.min().item() >= -1.0 and full.max().item() <= 1.0


def test_sample_batch_mirror(noise_dataset):
    state = torch.Generator().manual_seed(5).get_state()
    plain = sample_batch(noise_dataset, 4, 512, torch.Generator().set_state(state))
    mirrored = sample_batch(noise_dataset, 4, 512, torch.Generator().set_state(state), mirror=True)
    same = (mirrored == plain).flatten(1).all(1)
    flipped = (mirrored == plain.flip(3)).flatten(1).all(1)
    assert bool((same | flipped).all())  # same indices, each image either as is or flipped left-right
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_sample_batch_argument_errors(noise_dataset):
    g = torch.Generator()
    with pytest.raises(TypeError, match="generator"):
        sample_batch(noise_dataset, 4, 8, None)
    with pytest.raises(ValueError, match="batch_size"):
        sample_batch(noise_dataset, 4, 0, g)
    with pytest.raises(TypeError, match="dataset"):
        sample_batch("path", 4, 8, g)
    with pytest.raises(ValueError, match="res_log2"):
        sample_batch(noise_dataset, 6, 8, g)


def test_default_dataset_deterministic_and_cached(tmp_path, monkeypatch):
    a = default_dataset(tmp_path / "a", resolution=16, progress=False)
    b = default_dataset(tmp_path / "b", resolution=16, progress=False)
    da, db = MultiResDataset(a), MultiResDataset(b)
    assert da.num_images == 4096 and da.resolution_log2 == 4 and da.num_channels == 3
    for k in range(2, 5):
        np.testing.assert_array_equal(da.images(k), db.images(k))
    imgs = np.asarray(da.images(4)).astype(np.float32)
    # Every image has a visible shape: a clear spread of values inside each image.
    assert (imgs.reshape(4096, -1).std(axis=1) > 10).mean() > 0.95

    def no_render(*args, **kwargs):
        raise AssertionError("a cached dataset must not be regenerated")

    monkeypatch.setattr("progan_fast.train.data.shapes.render_shapes", no_render)
    assert default_dataset(tmp_path / "a", resolution=16, progress=False) == a
    with pytest.raises(ValueError, match="different dataset"):
        default_dataset(tmp_path / "a", resolution=32, progress=False)


def test_default_dataset_location(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = default_dataset(resolution=8, progress=False)
    assert path == str(tmp_path / "cache" / "progan_fast" / "datasets" / f"shapes-8-v{data.SHAPES_VERSION}")
    assert MultiResDataset(path).resolution_log2 == 3
    with pytest.raises(ValueError, match="resolution"):
        default_dataset(resolution=48)


def test_to_uint8_matches_official_rounding():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0 / 127.5, 1.0, 2.0])
    # 127.5 rounds half to even (128); 128.5 -> 128; saturates at both ends.
    assert to_uint8(x).tolist() == [0, 0, 128, 128, 255, 255]
    np.testing.assert_array_equal(to_uint8(x.numpy()), to_uint8(x).numpy())


def test_save_image_grid(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(5, 3, 8, 6), dtype=np.uint8)
    path = save_image_grid(imgs, tmp_path / "g" / "grid.png", nrow=2)
    grid = np.asarray(PIL.Image.open(path))
    assert grid.shape == (3 * 8, 2 * 6, 3)
    np.testing.assert_array_equal(grid[8:16, 6:12], imgs[3].transpose(1, 2, 0))
    assert (grid[16:, 6:] == 0).all()  # the empty cell stays black

    floats = torch.from_numpy(imgs).float() / 127.5 - 1.0
    save_image_grid(floats, tmp_path / "f.png", nrow=5)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "f.png"))[:, 12:18],
                                  imgs[2].transpose(1, 2, 0))
    save_image_grid(torch.zeros(4, 1, 4, 4), tmp_path / "gray.png")
    assert PIL.Image.open(tmp_path / "gray.png").mode == "L"
    with pytest.raises(ValueError, match="images"):
        save_image_grid(np.zeros((2, 4, 8, 8), np.uint8), tmp_path / "x.png")
    assert sorted(os.listdir(tmp_path)) == ["f.png", "g", "gray.png"]


@pytest.mark.timeout(120)
def test_create_dataset_reads_regular_files_and_links_by_policy(tmp_path, capsys):
    """FIFOs and devices are skipped without blocking; links to directories are not descended; file links that
    resolve inside the source folder are read, those leaving it only with follow_links=True."""
    rng = np.random.default_rng(3)
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    PIL.Image.fromarray(_noise(rng, 8, 8)).save(src / "a.png")
    PIL.Image.fromarray(_noise(rng, 8, 8)).save(src / "sub" / "b.png")
    PIL.Image.fromarray(_noise(rng, 8, 8)).save(elsewhere / "outside.png")
    os.mkfifo(src / "fifo.png")  # opening it for reading would wait for a writer forever
    os.symlink("sub/b.png", src / "inside_link.png")
    os.symlink(elsewhere / "outside.png", src / "outside_link.png")
    os.symlink("/dev/zero", src / "zero.png")
    os.symlink("missing.png", src / "broken.png")
    os.symlink(elsewhere, src / "linked_dir")

    report = create_dataset(src, tmp_path / "ds", progress=False)
    reasons = {os.path.relpath(p, src): r for p, r in report.skipped}
    assert report.num_images == 3  # a.png, inside_link.png (= sub/b.png), sub/b.png
    assert reasons["fifo.png"] == "OSError: a FIFO, not a regular file"
    assert "outside the source folder" in reasons["outside_link.png"] and "--follow-links" in reasons[
        "outside_link.png"]
    assert "outside the source folder" in reasons["zero.png"]
    assert "No such file" in reasons["broken.png"]
    assert reasons["linked_dir"].startswith("symbolic link to a directory")
    ds = MultiResDataset(report.path)
    np.testing.assert_array_equal(ds.images(3)[1], ds.images(3)[2])  # inside_link.png and sub/b.png
    capsys.readouterr()

    followed = create_dataset(src, tmp_path / "ds2", progress=False, follow_links=True)
    reasons = {os.path.relpath(p, src): r for p, r in followed.skipped}
    assert followed.num_images == 4 and "outside_link.png" not in reasons
    assert reasons["zero.png"] == "OSError: a character device, not a regular file"
    assert reasons["fifo.png"] == "OSError: a FIFO, not a regular file"


def test_create_dataset_removes_what_a_killed_run_left(image_folder, tmp_path):
    from progan_fast.fileio import make_locked_temp_dir
    from progan_fast.train.data.writer import LevelWriter, partial_prefix
    src, good, *_ = image_folder
    out = tmp_path / "ds"
    # A run killed with SIGKILL: its partial directory stays, and the kernel drops its lock.
    dead, fd = make_locked_temp_dir(str(tmp_path), partial_prefix(out))
    (tmp_path / dead / "r04.npy").write_bytes(b"x" * 1000)
    os.close(fd)
    # A run still in progress for the same destination keeps its lock and its directory.
    alive = LevelWriter(out)
    try:
        report = create_dataset(src, out, progress=False)
        assert report.num_images == len(good)
        assert not os.path.exists(dead) and os.path.isdir(alive.tmp)
    finally:
        alive.abort()
    assert sorted(os.listdir(tmp_path)) == ["ds", "src"]


def test_dataset_files_get_umask_permissions(image_folder, tmp_path):
    src, *_ = image_folder
    previous = os.umask(0o027)
    try:
        report = create_dataset(src, tmp_path / "ds", progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(report.path).st_mode) == 0o750
    assert {stat.S_IMODE(os.stat(os.path.join(report.path, n)).st_mode) for n in os.listdir(report.path)} == {0o640}
