"""What training writes: only inside the run directory, never through a symbolic link, with the permissions the
umask gives; one trainer per directory; after a kill, the next run cleans up (temporary files) and the log and
TensorBoard go back to the checkpoint; missing optional packages cost one notice, not the run."""
import csv
import os
import shutil
import stat
import sys

import pytest

from progan_fast import cli
from progan_fast.fileio import DirectoryInUse, lock_directory
from progan_fast.train import checkpoint
from progan_fast.train.loop import Trainer

TINY = ["--resolution", "8", "--lod-training-kimg", "0.05", "--lod-transition-kimg", "0.05", "--minibatch", "8",
        "--fmap-base", "32", "--fmap-max", "16", "--latent-size", "16", "--tick-kimg", "0.1", "--grid-size", "2",
        "--no-progress"]
FIRST_TICK = "0000.128kimg"  # 4 iterations of 32 images reach the 0.1 kimg tick


def _snapshot(root, skip):
    out = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) != skip]
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            out[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_nothing_written_outside_the_run_directory(tiny_data, tmp_path, monkeypatch, umask_027):
    work, outside, run = tmp_path / "work", tmp_path / "outside", tmp_path / "work" / "run"
    for d in (work, outside, run):
        d.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # Links planted under names the run writes later (a grid and a snapshot of its first tick) are replaced, never
    # followed.
    for name in (f"fakes-{FIRST_TICK}.png", f"network-snapshot-{FIRST_TICK}.pt"):
        (outside / name).write_text("victim")
        os.symlink(outside / name, run / name)
    # matplotlib builds its font cache (in its own cache directory) when first imported in a process: not ours.
    import matplotlib.font_manager  # noqa: F401
    before = _snapshot(tmp_path, skip=str(run))

    assert cli.main(["train", "--data", tiny_data, "--out", "run", "--kimg", "0.128"] + TINY) == 0

    assert _snapshot(tmp_path, skip=str(run)) == before
    assert all((outside / name).read_text() == "victim" for name in os.listdir(outside))
    for directory, dirs, files in os.walk(run):
        for name in dirs:
            assert stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode) == 0o750, name
        for name in files:
            path = os.path.join(directory, name)
            assert stat.S_ISREG(os.lstat(path).st_mode), f"{name} is not a regular file"
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640, name
    assert {f"fakes-{FIRST_TICK}.png", f"network-snapshot-{FIRST_TICK}.pt", checkpoint.LATEST, "log.csv",
            "config.json", "losses.png", "reals.png", "fakes_init.png", "tensorboard"} <= set(os.listdir(run))


@pytest.mark.parametrize("name", ["config.json", "log.csv", "losses.png", "tensorboard", ".lock"])
def test_links_in_the_run_directory_are_refused_before_writing(tiny_data, tmp_path, capsys, name):
    run, victim = tmp_path / "run", tmp_path / "victim"
    run.mkdir()
    victim.mkdir() if name == "tensorboard" else victim.write_text("victim")
    os.symlink(victim, run / name)
    assert cli.main(["train", "--data", tiny_data, "--out", str(run), "--kimg", "0.1"] + TINY) == 2
    err = capsys.readouterr().err
    assert f"{run / name} is a symbolic link" in err and "remove it" in err
    assert os.listdir(run) == [name]
    assert os.listdir(victim) == [] if name == "tensorboard" else victim.read_text() == "victim"


def test_one_trainer_per_run_directory(tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    fd = lock_directory(str(run))
    try:
        trainer = Trainer(tiny_config(total_kimg=0.032), str(run), progress=False)
        with pytest.raises(DirectoryInUse, match="in use by another progan_fast process"):
            trainer.run()
    finally:
        os.close(fd)
    assert sorted(os.listdir(run)) == [".lock"]


def _log_ticks(run):
    with open(run / "log.csv", newline="") as f:
        return [(int(r["tick"]), float(r["kimg"])) for r in csv.DictReader(f)]


def _tensorboard_steps(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars("train/G_loss")]


def test_resume_after_a_kill(tiny_config, tmp_path):
    """A kill between a tick's log row and its checkpoint, and in the middle of writing a checkpoint: the resumed
    run removes the torn temporary file and drops the log rows and TensorBoard points the checkpoint does not
    cover, so that every tick appears once."""
    run = tmp_path / "run"
    # Ticks every 64 images (2 iterations), checkpoint-latest every second tick.
    config = tiny_config(total_kimg=0.256, tick_kimg_base=0.064, network_snapshot_ticks=2)
    Trainer(config, str(run), progress=False, log=lambda *a, **k: None).run()
    assert _log_ticks(run) == [(0, 0.064), (1, 0.128), (2, 0.192), (3, 0.256)]
    # As if killed after logging ticks 2 and 3 but before checkpointing tick 3 ...
    shutil.copy(run / "network-snapshot-0000.128kimg.pt", run / checkpoint.LATEST)
    # ... while a checkpoint and a grid were being written.
    torn = [".checkpoint-latest.pt.0123456789ab.tmp", f".fakes-{FIRST_TICK}.png.abcdef012345.tmp"]
    for name in torn:
        (run / name).write_bytes(b"torn")
    (run / ".keep.tmp").write_text("not ours")

    messages = []
    ckpt = checkpoint.load(run / checkpoint.LATEST)
    resumed = Trainer(config, str(run), progress=False, resume=ckpt, log=lambda *a, **k: messages.append(a[0]))
    assert resumed.cur_nimg == 128 and resumed.tick == 2
    resumed.run()

    assert _log_ticks(run) == [(0, 0.064), (1, 0.128), (2, 0.192), (3, 0.256)]
    assert _tensorboard_steps(run) == [64, 128, 192, 256]
    assert not any(os.path.exists(run / name) for name in torn) and (run / ".keep.tmp").exists()
    assert any("removed 2 temporary file(s)" in m for m in messages)


def test_missing_tensorboard_and_matplotlib_cost_one_notice(tiny_config, tmp_path, monkeypatch):
    # What `pip install -e .` without the `train` extra gives: training runs, without events and the loss plot.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    messages = []
    run = tmp_path / "run"
    Trainer(tiny_config(total_kimg=0.064), str(run), progress=False,
            log=lambda *a, **k: messages.append(a[0])).run()
    notes = [m for m in messages if m.startswith("note:")]
    assert len(notes) == 1
    assert "tensorboard and matplotlib not installed" in notes[0] and "progan_fast[train]" in notes[0]
    names = set(os.listdir(run))
    assert {"log.csv", checkpoint.LATEST, "reals.png"} <= names
    assert "tensorboard" not in names and "losses.png" not in names
