"""Command line: train / resume / generate / dataset create / metrics / env, argument errors, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from progan_fast import cli
from progan_fast.train import checkpoint
from progan_fast.train.config import TrainConfig, resolve_memory_format

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--resolution", "8", "--lod-training-kimg", "0.05", "--lod-transition-kimg", "0.05", "--minibatch", "8",
        "--fmap-base", "32", "--fmap-max", "16", "--latent-size", "16", "--tick-kimg", "0.1", "--grid-size", "2",
        "--no-progress"]


@pytest.fixture
def trained_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", tiny_data, "--out", str(out), "--kimg", "0.15"] + TINY) == 0
    return out


def test_train_outputs(trained_run):
    names = set(os.listdir(trained_run))
    assert {"config.json", "log.csv", "losses.png", "reals.png", "fakes_init.png", checkpoint.LATEST,
            "tensorboard"} <= names
    assert any(n.startswith("fakes-") and n.endswith(".png") for n in names)
    assert any(n.startswith("network-snapshot-") for n in names)
    with open(trained_run / "config.json") as f:
        config = json.load(f)
    assert config["resolution"] == 8 and config["minibatch_base"] == 8 and config["minibatch_dict"] == {}
    with open(trained_run / "log.csv") as f:
        header = f.readline().strip().split(",")
    for column in ("kimg", "lod", "alpha", "resolution", "G_loss", "D_loss", "sec_per_kimg", "img_per_s"):
        assert column in header
    assert os.listdir(trained_run / "tensorboard")
    ckpt = torch.load(trained_run / checkpoint.LATEST, weights_only=True)
    assert ckpt["cur_nimg"] >= 150


def test_resume_extends_and_refuses_overwrite(trained_run, tiny_data, capsys):
    # A second plain run into the same directory is refused; --resume continues with the stored config.
    assert cli.main(["train", "--data", tiny_data, "--out", str(trained_run), "--kimg", "0.2"] + TINY) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(trained_run), "--kimg", "0.25", "--no-progress"]) == 0
    ckpt = torch.load(trained_run / checkpoint.LATEST, weights_only=True)
    assert ckpt["cur_nimg"] >= 250 and ckpt["config"]["total_kimg"] == 0.25 and ckpt["config"]["fmap_max"] == 16


def test_train_with_winograd_convs(tiny_data, tmp_path):
    """--conv-algorithm winograd: channels_last models whose 8x8 3x3 convs run by Winograd (the 4x4 ones stay
    direct), recorded in the config, and a checkpoint that resumes with it."""
    from progan_fast.ops import winograd
    out = tmp_path / "run"
    calls = []
    real = winograd.conv3x3_winograd
    winograd.conv3x3_winograd = lambda x, w: calls.append(tuple(x.shape[-2:])) or real(x, w)
    try:
        assert cli.main(["train", "--data", tiny_data, "--out", str(out), "--kimg", "0.15",
                         "--conv-algorithm", "winograd"] + TINY) == 0
    finally:
        winograd.conv3x3_winograd = real
    assert calls and set(calls) == {(8, 8)}
    ckpt = torch.load(out / checkpoint.LATEST, weights_only=True)
    assert ckpt["config"]["conv_algorithm"] == "winograd"
    assert all(torch.isfinite(v).all() for v in ckpt["G"].values() if v.is_floating_point())
    assert winograd.conv_algorithm() == "direct"  # the trainer never changes it outside its steps
    assert cli.main(["train", "--resume", str(out), "--kimg", "0.2", "--no-progress"]) == 0


def test_generate(trained_run, tmp_path):
    grid = tmp_path / "grid.png"
    assert cli.main(["generate", "--ckpt", str(trained_run), "--num", "6", "--out", str(grid)]) == 0
    assert Image.open(grid).size[0] > 8
    folder = tmp_path / "single"
    assert cli.main(["generate", "--ckpt", str(trained_run / checkpoint.LATEST), "--num", "3", "--individual",
                     "--out", str(folder), "--network", "G", "--seed", "5"]) == 0
    files = sorted(os.listdir(folder))
    assert len(files) == 3 and Image.open(folder / files[0]).size == (8, 8)


def test_metrics(trained_run, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["metrics", "--ckpt", str(trained_run), "--num", "64", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["resolution"] == 8 and result["num"] == 64
    assert result["ms_ssim"] is None  # needs 16x16 or more
    assert np.isfinite(result["swd"]["avg"]) and set(result["swd"]) == {"8", "avg"}


def test_dataset_create(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(src / f"{i}.png")
    assert cli.main(["dataset", "create", str(src), str(tmp_path / "ds"), "--resolution", "16",
                     "--no-progress"]) == 0
    from progan_fast.train.data import MultiResDataset
    ds = MultiResDataset(str(tmp_path / "ds"))
    assert ds.num_images == 3 and ds.resolution_log2 == 4


def test_env(capsys):
    assert cli.main(["env"]) == 0
    assert "torch" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--resolution", "48"], "power of two"),
    (["train", "--kimg", "-1"], "number"),
    (["train", "--minibatch-dict", "4:32,6:8"], "power of two"),
    (["train", "--amp", "fp8"], "invalid choice"),
    (["train", "--conv-algorithm", "fft"], "invalid choice"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/nonexistent/dataset"], "dataset directory not found"),
    (["train", "--resume", "/nonexistent/run"], "checkpoint not found"),
    (["generate", "--ckpt", "/nonexistent.pt"], "checkpoint not found"),
    (["dataset", "create", "/nonexistent/src", "/tmp/x"], "not found"),
])
def test_missing_files(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_resolution_above_dataset(tiny_data, tmp_path, capsys):
    assert cli.main(["train", "--data", tiny_data, "--out", str(tmp_path / "r"), "--resolution", "16"]) == 2
    assert "exceeds the dataset's resolution" in capsys.readouterr().err


def test_sigint_writes_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "progan_fast.train", "--data", tiny_data, "--out", str(out), "--kimg", "1000"]
    proc = subprocess.Popen(cmd + TINY, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "log.csv").exists():  # training is under way once the first tick is logged
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "interrupted at kimg" in output
    ckpt = checkpoint.load(out / checkpoint.LATEST)
    assert 100 <= ckpt["cur_nimg"] < 1_000_000


@pytest.mark.parametrize("setting, device, reexec", [(None, "cpu", True), ("OMP_WAIT_POLICY=ACTIVE", "cpu", False),
                                                     ("GOMP_SPINCOUNT=0", "cpu", False), (None, "cuda", False)])
def test_cpu_training_reexecutes_with_a_short_openmp_spin(monkeypatch, setting, device, reexec):
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr(cli, "main", lambda argv: 0)
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    if setting is not None:
        monkeypatch.setenv(*setting.split("="))
    assert cli.entry(["train", "--device", device, "--kimg", "1"]) == 0
    if reexec:
        [(path, argv, env)] = calls
        assert path == sys.executable and argv == [sys.executable] + sys.orig_argv[1:]
        assert env["GOMP_SPINCOUNT"] == "1000" and "OMP_WAIT_POLICY" not in env
    else:
        assert calls == []


def test_config_refuses_an_unknown_conv_algorithm(tiny_config):
    with pytest.raises(ValueError, match="conv_algorithm"):
        tiny_config(conv_algorithm="fft").validate()


def test_config_refuses_an_unknown_memory_format(tiny_config):
    with pytest.raises(ValueError, match="memory_format"):
        tiny_config(memory_format="nhwc").validate()


def test_auto_memory_format_is_channels_last_only_where_it_was_measured_faster(tiny_config):
    amx, avx512_bf16 = {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, {"avx512f", "avx512_bf16"}
    resolve = resolve_memory_format
    assert resolve(tiny_config(amp="bf16"), "cpu", amx)[0] is True
    assert resolve(tiny_config(amp="bf16"), "cpu", avx512_bf16)[0] is False
    assert resolve(tiny_config(amp="none"), "cpu", amx)[0] is False
    assert resolve(tiny_config(amp="bf16"), "cuda", amx)[0] is False
    assert resolve(tiny_config(conv_algorithm="winograd"), "cpu", set())[0] is True
    assert resolve(tiny_config(amp="bf16", memory_format="nchw"), "cpu", amx) == (False, "--memory-format nchw")
    assert resolve(tiny_config(memory_format="channels_last"), "cuda", set())[0] is True


def test_train_channels_last(tiny_data, tmp_path, capsys):
    """--memory-format channels_last: the networks compute in channels_last, the run log says so, the config keeps it
    and a resumed run continues with it."""
    from progan_fast.train.loop import Trainer
    out = tmp_path / "run"
    assert cli.main(["train", "--data", tiny_data, "--out", str(out), "--kimg", "0.15",
                     "--memory-format", "channels_last"] + TINY) == 0
    ckpt = torch.load(out / checkpoint.LATEST, weights_only=True)
    assert ckpt["config"]["memory_format"] == "channels_last"
    assert "memory format: channels_last (--memory-format channels_last)" in capsys.readouterr().out
    trainer = Trainer(TrainConfig.from_dict(ckpt["config"]), str(tmp_path / "second"), progress=False)
    images = trainer.G(torch.randn(2, trainer.latent_size), 3, 1.0)
    assert trainer.memory_format == "channels_last" and images.is_contiguous(memory_format=torch.channels_last)
    assert cli.main(["train", "--resume", str(out), "--kimg", "0.2", "--no-progress"]) == 0
