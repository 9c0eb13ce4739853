"""progan_fast.tune_allocator(): large CPU blocks stay with the process across steps instead of being mapped and
page-faulted in again, unless PROGAN_FAST_MALLOC=default; the trainer applies it and says so."""
import os
import subprocess
import sys

import pytest

from progan_fast import allocator, tune_allocator

# Allocates and frees a 256 MB tensor, then prints how much of it stayed resident (MB).
PROBE = """
import re, torch, progan_fast
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) // 1024
setting = progan_fast.tune_allocator()
x = torch.empty(64 * 1024 * 1024).fill_(1.0)
peak = rss()
del x
print(setting.kind, setting.tuned, peak - rss())
"""

needs_glibc = pytest.mark.skipif(allocator.active_allocator() != "glibc" or not os.path.exists("/proc/self/status"),
                                 reason="glibc malloc and /proc are needed to observe the thresholds")


def _probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env=dict(os.environ, **env)).stdout.split()
    return out[0], out[1] == "True", int(out[2])


@needs_glibc
def test_tuned_glibc_keeps_large_blocks():
    kind, tuned, returned_mb = _probe()
    assert (kind, tuned) == ("glibc", True)
    assert returned_mb < 64, f"{returned_mb} MB of a freed 256 MB tensor went back to the OS"


@needs_glibc
def test_default_setting_returns_large_blocks():
    kind, tuned, returned_mb = _probe(**{allocator.ENV_VAR: "default"})
    assert (kind, tuned) == ("glibc", False)
    assert returned_mb > 192, f"only {returned_mb} MB of a freed 256 MB tensor went back to the OS"


def test_setting_describes_itself():
    setting = tune_allocator()
    assert setting.kind in ("glibc", "jemalloc", "tcmalloc", "unknown")
    assert str(setting) == setting.description and setting.kind.split("malloc")[0] in str(setting)


def test_trainer_applies_and_logs_it(tmp_path):
    from progan_fast.train.config import TrainConfig
    from progan_fast.train.data import default_dataset
    from progan_fast.train.loop import Trainer
    config = TrainConfig(data=default_dataset(str(tmp_path / "shapes4"), resolution=4, progress=False), resolution=4,
                         fmap_base=16, fmap_max=8, latent_size=8, minibatch_base=4, minibatch_dict={})
    lines = []
    trainer = Trainer(config, None, device="cpu", progress=False, log=lambda *a, **k: lines.append(
        " ".join(map(str, a))))
    assert trainer.allocator == tune_allocator()
    assert f"allocator: {trainer.allocator}" in lines
