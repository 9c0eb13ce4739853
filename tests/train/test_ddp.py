"""Two CPU processes (torchrun, gloo): identical parameters on both ranks, rank 0 alone writes, resume is exact."""
import json
import os
import subprocess
import sys

import torch

from progan_fast.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r'''
import faulthandler; faulthandler.enable()  # an abort prints where each thread was
import json, sys
import torch
import torch.distributed as dist
from progan_fast.train import checkpoint
from progan_fast.train.config import TrainConfig
from progan_fast.train.loop import Trainer

dist.init_process_group("gloo")
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
out, resume = sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
t = Trainer(cfg, out, device="cpu", progress=False, resume=checkpoint.load(resume) if resume else None)
t.run()
rank = dist.get_rank()
torch.save({"G": t.G.state_dict(), "D": t.D.state_dict(), "Gs": t.Gs.state_dict(), "cur_nimg": t.cur_nimg,
            "data_seed": t.data_gen.initial_seed(), "world_size": t.world_size}, f"{out}.rank{rank}.pt")
dist.destroy_process_group()
'''


def _torchrun(tmp_path, config, out, resume=None):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           json.dumps(config.to_dict()), str(out)] + ([str(resume)] if resume else [])
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(f"{out}.rank{r}.pt", weights_only=True) for r in range(2)]


def _assert_equal_states(a, b):
    for net in ("G", "D", "Gs"):
        assert a[net].keys() == b[net].keys()
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"


def test_two_processes(tiny_config, tmp_path):
    full = _torchrun(tmp_path, tiny_config(total_kimg=0.3), tmp_path / "full")
    assert full[0]["world_size"] == 2
    assert full[0]["data_seed"] != full[1]["data_seed"]  # each rank draws its own data
    _assert_equal_states(full[0], full[1])
    initial = torch.load(tmp_path / "full" / checkpoint.LATEST, weights_only=True)
    assert initial["world_size"] == 2 and len(initial["rng"]) == 2
    # Only rank 0 writes: one header in the CSV log, one TensorBoard event file.
    with open(tmp_path / "full" / "log.csv") as f:
        assert sum(line.startswith("tick,") for line in f) == 1
    assert len(os.listdir(tmp_path / "full" / "tensorboard")) == 1

    _torchrun(tmp_path, tiny_config(total_kimg=0.15), tmp_path / "split")
    resumed = _torchrun(tmp_path, tiny_config(total_kimg=0.3), tmp_path / "split",
                        resume=tmp_path / "split" / checkpoint.LATEST)
    _assert_equal_states(resumed[0], resumed[1])
    assert resumed[0]["cur_nimg"] == full[0]["cur_nimg"]
    _assert_equal_states(full[0], resumed[0])
