"""Every user mistake: one line `progan-fast <command>: error: <what and how to fix>`, exit status 2, and nothing
written (no run directory, no grid, no dataset, not even the default dataset), checked before any work."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from progan_fast import cli
from progan_fast.train import checkpoint

TINY = ["--resolution", "8", "--lod-training-kimg", "0.05", "--lod-transition-kimg", "0.05", "--minibatch", "8",
        "--fmap-base", "32", "--fmap-max", "16", "--latent-size", "16", "--tick-kimg", "0.1", "--grid-size", "2",
        "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("errors") / "run"
    assert cli.main(["train", "--data", tiny_data, "--out", str(out), "--kimg", "0.064"] + TINY) == 0
    return out


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root)
                  for n in dirs + files)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current directory and user cache: whatever a failed command writes would show up here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return work


def _fails_cleanly(argv, command, fragment, capsys, workdir, prepared=()):
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"progan-fast {command}: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert _tree(workdir) == sorted(prepared)
    assert not os.path.exists(os.path.join(os.environ["XDG_CACHE_HOME"], "progan_fast"))
    return lines[0]


def _checkpoint_bytes(run_dir):
    return (run_dir / checkpoint.LATEST).read_bytes()


@pytest.mark.parametrize("name, make, fragment", [
    ("truncated.pt", lambda good: good[:len(good) // 2], "cannot be read as a checkpoint"),
    ("empty.pt", lambda good: b"", "cannot be read as a checkpoint"),
    ("random.pt", lambda good: np.random.default_rng(0).bytes(4096), "cannot be read as a checkpoint"),
])
def test_unreadable_checkpoint(run_dir, workdir, capsys, name, make, fragment):
    (workdir / name).write_bytes(make(_checkpoint_bytes(run_dir)))
    # Without --data, a resume that got as far as training would first generate the default dataset.
    line = _fails_cleanly(["train", "--resume", name], "train", fragment, capsys, workdir, [name])
    assert name in line and "network-snapshot" in line
    _fails_cleanly(["generate", "--ckpt", name, "--out", "g.png"], "generate", fragment, capsys, workdir, [name])


def test_malicious_checkpoint_is_refused_by_weights_only(workdir, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"format": "progan_fast", "config": Payload()}, workdir / "evil.pt")
    line = _fails_cleanly(["train", "--resume", "evil.pt"], "train", "weights_only refused it", capsys, workdir,
                          ["evil.pt"])
    assert "system" in line


def test_checkpoint_missing_keys(run_dir, workdir, capsys):
    ckpt = torch.load(run_dir / checkpoint.LATEST, weights_only=True)
    del ckpt["D_opt"], ckpt["rng"]
    torch.save(ckpt, workdir / "partial.pt")
    _fails_cleanly(["train", "--resume", "partial.pt"], "train", "missing D_opt, rng", capsys, workdir,
                   ["partial.pt"])


@pytest.mark.parametrize("flag, value, stored", [("--fmap-max", "32", "fmap_max 16"),
                                                 ("--latent-size", "8", "latent_size 16"),
                                                 ("--fmap-base", "64", "fmap_base 32")])
def test_resume_with_a_changed_network_names_the_flag(run_dir, workdir, capsys, flag, value, stored):
    before = _tree(run_dir)
    line = _fails_cleanly(["train", "--resume", str(run_dir), flag, value, "--kimg", "1"], "train",
                          f"{flag} {value} conflicts with the checkpoint", capsys, workdir)
    assert stored in line and f"drop {flag}" in line
    assert _tree(run_dir) == before


def test_resume_with_the_same_network_given_explicitly_is_not_a_conflict(run_dir, tmp_path):
    out = tmp_path / "continued"
    assert cli.main(["train", "--resume", str(run_dir), "--out", str(out), "--latent-size", "16",
                     "--fmap-max", "16", "--kimg", "0.064", "--no-progress"]) == 0


@pytest.mark.parametrize("device, fragment", [
    ("foo", "--device must be auto, cpu, cuda or cuda:N; got 'foo'"),
    ("meta", "--device must be auto, cpu, cuda or cuda:N; got 'meta'"),
    pytest.param("cuda:0", "no CUDA device is visible", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="needs a machine without a GPU")),
])
def test_bad_device(tiny_data, workdir, capsys, device, fragment):
    _fails_cleanly(["train", "--data", tiny_data, "--device", device] + TINY, "train", fragment, capsys, workdir)


def test_network_without_feature_maps(tiny_data, workdir, capsys):
    argv = ["train", "--data", tiny_data, "--out", "run"] + TINY + ["--fmap-base", "1"]
    _fails_cleanly(argv, "train", "fmap_base 1 leaves no feature maps", capsys, workdir)


def test_minibatch_that_the_stddev_groups_cannot_split(workdir, capsys):
    # No --data: the check comes before the default dataset would be generated.
    line = _fails_cleanly(["train", "--out", "run", "--minibatch", "6", "--kimg", "1"], "train",
                          "minibatch at 4x4 is 6", capsys, workdir)
    assert "groups of 4" in line and "multiple of 4" in line


def test_resolution_below_start_resolution(workdir, capsys):
    _fails_cleanly(["train", "--out", "run", "--resolution", "8", "--start-resolution", "16"], "train",
                   "start_resolution (16) must not exceed resolution (8)", capsys, workdir)


def test_run_directory_is_a_file(tiny_data, workdir, capsys):
    (workdir / "taken").write_text("x")
    _fails_cleanly(["train", "--data", tiny_data, "--out", "taken"] + TINY, "train", "taken is a file", capsys,
                   workdir, ["taken"])


def test_seed_out_of_range(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--seed", str(2 ** 70)])
    assert exc.value.code == 2
    assert "progan-fast train: error: argument --seed: expected an integer in [0, 2**63 - 1]" in \
        capsys.readouterr().err


def test_generate_out_errors(run_dir, workdir, capsys):
    (workdir / "folder").mkdir()
    line = _fails_cleanly(["generate", "--ckpt", str(run_dir), "--out", "folder"], "generate", "is a directory",
                          capsys, workdir, ["folder"])
    assert "--individual" in line
    _fails_cleanly(["generate", "--ckpt", str(run_dir), "--out", "grid.jpg"], "generate", "must name a .png file",
                   capsys, workdir, ["folder"])
    (workdir / "file.png").write_text("x")
    _fails_cleanly(["generate", "--ckpt", str(run_dir), "--out", "file.png/grid.png"], "generate",
                   "file.png is a file, not a directory", capsys, workdir, ["file.png", "folder"])
    _fails_cleanly(["generate", "--ckpt", str(run_dir), "--out", "file.png", "--individual"], "generate",
                   "file.png is a file", capsys, workdir, ["file.png", "folder"])


def test_metrics_json_path_checked_before_evaluating(run_dir, workdir, capsys, monkeypatch):
    monkeypatch.setattr("progan_fast.train.evaluate.evaluate_checkpoint",
                        lambda *a, **k: pytest.fail("evaluated before the --json path was checked"))
    (workdir / "taken").write_text("x")
    _fails_cleanly(["metrics", "--ckpt", str(run_dir), "--json", "taken/m.json"], "metrics", "taken is a file",
                   capsys, workdir, ["taken"])


@pytest.fixture
def images(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(src / f"{i}.png")
    return src


@pytest.mark.parametrize("prepare, out, fragment", [
    (lambda w: (w / "ds").mkdir() or (w / "ds" / "keep").write_text("x"), "ds", "already exists and is not empty"),
    (lambda w: (w / "ds").write_text("x"), "ds", "is a file"),
    (lambda w: (w / "file").write_text("x"), "file/ds", "file is a file"),
])
def test_dataset_out_checked_before_any_image_is_read(images, workdir, capsys, monkeypatch, prepare, out,
                                                      fragment):
    monkeypatch.setattr("progan_fast.train.data.create._scan",
                        lambda path: pytest.fail("read an image before checking OUT"))
    prepare(workdir)
    prepared = _tree(workdir)
    _fails_cleanly(["dataset", "create", str(images), out, "--no-progress"], "dataset create", fragment, capsys,
                   workdir, prepared)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_dataset_out_not_writable(images, workdir, capsys, monkeypatch):
    monkeypatch.setattr("progan_fast.train.data.create._scan",
                        lambda path: pytest.fail("read an image before checking OUT"))
    (workdir / "locked").mkdir()
    os.chmod(workdir / "locked", 0o555)
    try:
        _fails_cleanly(["dataset", "create", str(images), "locked/ds", "--no-progress"], "dataset create",
                       "is not writable", capsys, workdir, ["locked"])
    finally:
        os.chmod(workdir / "locked", 0o755)
