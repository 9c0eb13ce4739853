"""The progressive training loop (official TF `train.py` `train_progressive_gan`, on progan_fast's ops and models).

Per outer iteration: recompute the schedule (lr, Adam reset when floor(lod) or ceil(lod) changes), then
`minibatch_repeats` times: `D_repeats` D steps, each followed by the Gs update (Gs <- beta*Gs + (1-beta)*G from the
previous G step; buffers copied) and `cur_nimg += minibatch`, then one G step. Reals are sampled at the current
resolution and faded with ops.fade_reals, so no full-resolution tensor exists before the final stage.

Distributed (torchrun): every rank runs the same schedule on minibatch / world_size samples of its own data and
latents (generators seeded by rank). Gradients are averaged with one flat all_reduce per step instead of wrapping
the networks in DistributedDataParallel: the D step runs D three times (reals, fakes, the penalty's mix) and takes a
double backward through the last, the set of used parameters changes with the resolution, and D runs without
parameter gradients inside the G step; a manual reduction is exact under all three and costs one collective.
The reduced buffer carries the loss too, so every rank takes the same skip decision on a non-finite loss.
"""
import contextlib
import copy
import csv
import functools
import io
import math
import os
import signal
import time

import torch
import torch.distributed as dist

from .. import backends, ops
from ..allocator import tune_allocator
from ..fileio import atomic_write, lock_directory, refuse_symlinks, remove_stale_temp_files
from ..images import save_image_grid
from ..ops import winograd
from . import checkpoint
from .config import TrainConfig, resolve_memory_format
from .device import resolve_device
from .losses import discriminator_loss, generator_loss
from .schedule import TrainingSchedule

LOG_FIELDS = ("tick", "kimg", "lod", "alpha", "resolution", "minibatch", "G_loss", "D_loss", "D_real", "D_fake",
              "D_gp", "D_drift", "grad_norm", "sec_per_tick", "sec_per_kimg", "img_per_s", "nonfinite_skips",
              "fp16_overflows", "total_sec")


class NonFiniteLossError(RuntimeError):
    pass


def _seed_for(seed, rank, stream):
    """Independent, reproducible seeds per (run seed, rank, stream)."""
    return (int(seed) * 1_000_003 + rank * 101 + stream) % (2 ** 63)


# What a run directory holds under fixed names (numbered grids and snapshots are written the same way). None of
# them may be a symbolic link: files are replaced atomically, never written through a link.
RUN_FILES = ("config.json", "log.csv", "losses.png", "reals.png", "fakes_init.png", checkpoint.LATEST,
             "tensorboard", ".lock")


def check_run_dir(run_dir):
    """Raises ValueError unless `run_dir` is absent or a directory whose fixed output names are not links."""
    if os.path.lexists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"the run directory {run_dir} is a file; choose a directory (--out)")
    if os.path.isdir(run_dir):
        refuse_symlinks(run_dir, RUN_FILES)


def _on_config_backend(method):
    """Runs a Trainer method under config.backend ("auto" leaves the process's choice alone) and
    config.conv_algorithm, so that a Trainer never changes the backend or the conv algorithm of code outside it."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with winograd.use_conv_algorithm(self.config.conv_algorithm):
            if self.config.backend == "auto":
                return method(self, *args, **kwargs)
            with backends.use_backend(self.config.backend):
                return method(self, *args, **kwargs)
    return wrapper


class Trainer:
    """Holds the networks, optimizers and all training state; `run()` trains until `config.total_kimg`.

    run_dir may be None (no files are written; used by tests that only need the state). resume: a checkpoint dict
    or path; the config then comes from the caller (which normally took it from the checkpoint). Everything is
    validated (config, device, backend, dataset, checkpoint, run directory) before anything is written: the
    default dataset (generated on first use) here, the run directory in run().
    """

    def __init__(self, config, run_dir=None, *, device=None, resume=None, progress=True, log=print):
        from ..models import Discriminator, Generator
        from .data import MultiResDataset, default_dataset, default_dataset_path

        self.config = config = config.validate()
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.is_main = self.rank == 0
        self.run_dir = None if run_dir is None else os.path.abspath(run_dir)
        self.progress = progress and self.is_main
        self.log = log if self.is_main else (lambda *a, **k: None)
        self.device = resolve_device(device)
        # From 64x64 up, glibc's default thresholds map and page-fault every activation on every step.
        self.allocator = tune_allocator() if self.device.type == "cpu" else None
        if self.allocator is not None:
            self.log(f"allocator: {self.allocator}")
        if config.backend != "auto":
            ok, reason = backends.available(config.backend)
            if not ok:
                raise backends.BackendUnavailable(f"backend {config.backend!r} is unavailable: {reason}")
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
        if resume is not None and not isinstance(resume, dict):
            resume = checkpoint.load(checkpoint.resolve_path(resume))

        if config.data is None:
            default_resolution = config.resolution or 32
            data_path, dataset = default_dataset_path(default_resolution), None
            data_res_log2, num_channels = default_resolution.bit_length() - 1, 3
        else:
            dataset = MultiResDataset(config.data)
            data_path, data_res_log2, num_channels = config.data, dataset.resolution_log2, dataset.num_channels
        self.resolution_log2 = data_res_log2 if config.resolution is None else config.resolution.bit_length() - 1
        if self.resolution_log2 > data_res_log2:
            raise ValueError(f"resolution {2 ** self.resolution_log2} exceeds the dataset's resolution "
                             f"{2 ** data_res_log2} ({data_path})")
        config.validate_run(self.resolution_log2, self.world_size)
        if resume is not None:
            self._check_resume(resume, num_channels)
        if self.run_dir is not None and self.is_main:
            check_run_dir(self.run_dir)

        if dataset is None:
            # One rank builds the cached default dataset; the others wait, so they never race on its files.
            if self.is_main:
                default_dataset(data_path, resolution=config.resolution or 32, progress=progress)
            self._barrier()
            dataset = MultiResDataset(data_path)
        self.dataset = dataset
        self.dataset_path = os.path.abspath(data_path)

        torch.manual_seed(config.seed)  # same initial networks on every rank
        channels_last, layout_reason = resolve_memory_format(config, self.device.type)
        self.memory_format = "channels_last" if channels_last else "nchw"
        self.log(f"memory format: {self.memory_format} ({layout_reason})")
        if config.conv_algorithm == "winograd":
            self.log(f"conv algorithm: winograd F(4x4, 3x3) for the 3x3 convs on the CPU (maps >= "
                     f"{winograd.MIN_PIXELS} pixels)" +
                     ("" if self.device.type == "cpu" else f"; not on {self.device}: its convs stay direct"))
        self.G = Generator(resolution=2 ** self.resolution_log2, num_channels=self.dataset.num_channels,
                           latent_size=config.latent_size, fmap_base=config.fmap_base, fmap_max=config.fmap_max,
                           fmap_decay=config.fmap_decay, normalize_latents=config.normalize_latents,
                           channels_last=channels_last).to(self.device)
        self.D = Discriminator(resolution=2 ** self.resolution_log2, num_channels=self.dataset.num_channels,
                               fmap_base=config.fmap_base, fmap_max=config.fmap_max, fmap_decay=config.fmap_decay,
                               mbstd_group_size=config.mbstd_group_size, channels_last=channels_last).to(self.device)
        self.Gs = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.latent_size = self.G.latent_size
        adam = dict(betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps)
        self.G_opt = torch.optim.Adam(self.G.parameters(), lr=config.G_lrate, **adam)
        self.D_opt = torch.optim.Adam(self.D.parameters(), lr=config.D_lrate, **adam)
        fp16 = config.amp == "fp16"
        # TF's fp16 preset starts at 2^64 with slow growth; torch's defaults (2^16, x2 every 2000 good steps) are
        # the usual choice for PyTorch models and adapt within a few steps either way.
        self.G_scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.D_scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)

        self.data_gen = torch.Generator().manual_seed(_seed_for(config.seed, self.rank, 1))
        self.latent_gen = torch.Generator(self.device).manual_seed(_seed_for(config.seed, self.rank, 2))
        grid_gen = torch.Generator().manual_seed(_seed_for(config.seed, 0, 3))
        self.grid_latents = torch.randn(config.grid_size ** 2, self.latent_size, generator=grid_gen).to(self.device)

        self.cur_nimg = 0
        self.d_steps = 0  # D steps taken (skipped ones included): the penalty runs when d_steps % gp_interval == 0
        self.prev_lod = -1.0
        self.tick = 0
        self.tick_start_nimg = 0
        self.nonfinite_skips = 0
        self.fp16_overflows = 0
        self.total_sec = 0.0
        self._stop_requested = False
        self._tick_stats = {}
        self._tb = self._figure_class = self._lock_fd = None
        self._log_rows = []
        if resume is not None:
            self.load_state(resume)
        elif self.distributed:
            for tensor in list(self.G.state_dict().values()) + list(self.D.state_dict().values()):
                dist.broadcast(tensor, 0)
            self.Gs.load_state_dict(self.G.state_dict())

    # ---------------------------------------------------------------- state

    def schedule(self, cur_nimg=None):
        return TrainingSchedule(self.cur_nimg if cur_nimg is None else cur_nimg,
                                **self.config.schedule_kwargs(self.resolution_log2, self.world_size))

    def state_dict(self):
        rng = checkpoint.capture_rng(self.data_gen, self.latent_gen)
        rngs = [None] * self.world_size
        if self.distributed:
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        return {
            "format": "progan_fast", "version": checkpoint.FORMAT_VERSION,
            "config": self.config.to_dict(), "resolution_log2": self.resolution_log2,
            "num_channels": self.dataset.num_channels, "data": self.dataset_path,
            "world_size": self.world_size,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "Gs": self.Gs.state_dict(),
            "G_opt": self.G_opt.state_dict(), "D_opt": self.D_opt.state_dict(),
            "G_scaler": self.G_scaler.state_dict(), "D_scaler": self.D_scaler.state_dict(),
            "rng": rngs,
            "cur_nimg": self.cur_nimg, "d_steps": self.d_steps, "prev_lod": self.prev_lod, "tick": self.tick,
            "tick_start_nimg": self.tick_start_nimg, "nonfinite_skips": self.nonfinite_skips,
            "fp16_overflows": self.fp16_overflows, "total_sec": self.total_sec,
        }

    def _check_resume(self, ckpt, num_channels):
        if ckpt["resolution_log2"] != self.resolution_log2:
            raise ValueError(f"the checkpoint was trained to resolution {2 ** ckpt['resolution_log2']}, not "
                             f"{2 ** self.resolution_log2}")
        if ckpt["num_channels"] != num_channels:
            raise ValueError(f"the checkpoint was trained on {ckpt['num_channels']}-channel images; this dataset has "
                             f"{num_channels}")
        conflicts = self.config.architecture_conflicts(TrainConfig.from_dict(ckpt["config"]))
        if conflicts:
            raise ValueError("the networks of this config differ from the checkpoint's: " + ", ".join(
                f"{name} {mine} (checkpoint: {theirs})" for name, mine, theirs in conflicts))

    def load_state(self, ckpt):
        self._check_resume(ckpt, self.dataset.num_channels)
        for name in ("G", "D", "Gs"):
            try:
                getattr(self, name).load_state_dict(ckpt[name])
            except RuntimeError as exc:
                raise ValueError(f"the checkpoint's {name} does not match the network its config describes "
                                 f"({str(exc).splitlines()[0]}); the checkpoint is corrupt") from None
        self.G_opt.load_state_dict(ckpt["G_opt"])
        self.D_opt.load_state_dict(ckpt["D_opt"])
        if ckpt["G_scaler"]:
            self.G_scaler.load_state_dict(ckpt["G_scaler"])
            self.D_scaler.load_state_dict(ckpt["D_scaler"])
        rngs = ckpt["rng"]
        if len(rngs) != self.world_size:
            self.log(f"note: the checkpoint was written by {len(rngs)} process(es) and {self.world_size} resume it; "
                     "data and latent streams are re-derived per rank, so the continuation is not bit-exact")
            checkpoint.restore_rng(rngs[0], self.data_gen, self.latent_gen)
            self.data_gen.manual_seed(_seed_for(self.config.seed + ckpt["cur_nimg"], self.rank, 1))
            self.latent_gen.manual_seed(_seed_for(self.config.seed + ckpt["cur_nimg"], self.rank, 2))
        else:
            checkpoint.restore_rng(rngs[self.rank], self.data_gen, self.latent_gen)
        for key in ("cur_nimg", "prev_lod", "tick", "tick_start_nimg", "nonfinite_skips", "fp16_overflows",
                    "total_sec"):
            setattr(self, key, ckpt[key])
        # Checkpoints from before --gp-interval lack the count; they trained with the penalty on every step, so any
        # phase of a lazy penalty continues them equally well.
        self.d_steps = ckpt.get("d_steps", 0)

    def save_checkpoint(self, snapshot=False):
        """Writes checkpoint-latest.pt (and a numbered snapshot) from rank 0; every rank must call it."""
        state = self.state_dict()
        if not self.is_main or self.run_dir is None:
            return None
        latest = os.path.join(self.run_dir, checkpoint.LATEST)
        checkpoint.save(state, latest)
        if snapshot:
            checkpoint.save(state, os.path.join(self.run_dir, checkpoint.snapshot_name(self.cur_nimg)))
        return latest

    # ---------------------------------------------------------------- steps

    def _autocast(self):
        """torch.autocast for --amp bf16/fp16: float32 parameters, matmuls and convolutions in the half dtype (the
        ops cast their operands to the autocast dtype and reduce in float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _latents(self, n):
        return torch.randn(n, self.latent_size, generator=self.latent_gen, device=self.device)

    def _reals(self, sched, n):
        """The reals D sees: a minibatch at the current resolution, faded with the level below during a fade-in."""
        from .data import sample_batch
        reals = sample_batch(self.dataset, sched.res_log2, n, self.data_gen, mirror=self.config.mirror,
                             device=self.device)
        if sched.alpha < 1.0:
            reals = ops.fade_reals(reals, sched.alpha)
        return reals

    def _handle_nonfinite(self, what, value, sched):
        message = (f"non-finite {what} ({value}) at kimg {self.cur_nimg / 1000:.3f}, resolution {sched.resolution}, "
                   f"alpha {sched.alpha:.3f}")
        if self.config.nonfinite == "stop":
            raise NonFiniteLossError(message + "; stopping (nonfinite='stop'). Lower the learning rate, try "
                                     "--amp none, or resume from an earlier checkpoint.")
        self.nonfinite_skips += 1
        if self.nonfinite_skips <= 10 or self.nonfinite_skips % 100 == 0:
            self.log(f"warning: {message}; step skipped ({self.nonfinite_skips} skipped so far)")

    def _finish_step(self, net, opt, scaler, loss, name, sched, gp_ok=True):
        """Averages the gradients over ranks, then steps unless something is non-finite; returns the loss value
        (None when the step was skipped). One host sync per step, for the skip decision."""
        params = [p for p in net.parameters() if p.grad is not None]
        grads = [p.grad for p in params]
        scalars = torch.stack([loss.detach().float().reshape(()),
                               torch.as_tensor(gp_ok, dtype=torch.float32, device=self.device).reshape(())])
        if self.distributed:
            flat = torch.cat([g.reshape(-1).float() for g in grads] + [scalars])
            self._all_reduce(flat)
            flat /= self.world_size
            torch._foreach_copy_(grads, [chunk.view_as(g) for chunk, g in zip(
                flat[:-2].split([g.numel() for g in grads]), grads)])
            scalars = flat[-2:]
        if not scaler.is_enabled() and grads:
            # With fp16 loss scaling an inf gradient is an overflow, which the scaler handles by itself.
            finite = torch.isfinite(torch.stack(torch._foreach_norm(grads))).all().float().reshape(1)
            scalars = torch.cat([scalars, finite])
        loss_value, gp_ok, *grads_finite = scalars.tolist()
        if gp_ok < 1.0:
            # The scaled input gradient of the penalty overflowed in fp16: a loss-scale problem, not divergence.
            self.fp16_overflows += 1
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
            return None
        if not math.isfinite(loss_value):
            self._handle_nonfinite(f"{name} loss", loss_value, sched)
            return None
        if grads_finite and grads_finite[0] < 1.0:
            self._handle_nonfinite(f"{name} gradients", "inf/nan", sched)
            return None
        if scaler.is_enabled():
            before = scaler.get_scale()
            scaler.step(opt)  # skips the step itself when the (identical on every rank) gradients overflowed
            scaler.update()
            if scaler.get_scale() < before:
                self.fp16_overflows += 1
        else:
            opt.step()
        return loss_value

    @_on_config_backend
    def d_step(self, sched, n):
        """One D step on n samples (this rank's share); returns the loss, or None when the step was skipped."""
        cfg = self.config
        reals = self._reals(sched, n)
        latents = self._latents(n)
        # Drawn on every step, with or without the penalty: the latent stream (and so z) is the same for every K.
        mix = torch.rand(n, 1, 1, 1, generator=self.latent_gen, device=self.device)
        penalty = self.d_steps % cfg.gp_interval == 0
        self.d_steps += 1
        with torch.no_grad(), self._autocast():
            fakes = self.G(latents, sched.res_log2, sched.alpha)
        self.D_opt.zero_grad(set_to_none=True)
        scaler = self.D_scaler
        with self._autocast():
            loss, parts = discriminator_loss(
                self.D, reals, fakes, mix, sched.res_log2, sched.alpha, wgan_lambda=cfg.wgan_lambda,
                wgan_target=cfg.wgan_target, wgan_epsilon=cfg.wgan_epsilon,
                grad_scale=scaler.get_scale() if scaler.is_enabled() and penalty else None,
                gradient_penalty=penalty, gp_weight=float(cfg.gp_interval))
        scaler.scale(loss).backward()
        gp_ok = parts.pop("gp_grad_finite", True)
        value = self._finish_step(self.D, self.D_opt, scaler, loss, "D", sched, gp_ok)
        if value is not None:
            self._record(D_loss=value, **parts)
        return value

    @_on_config_backend
    def g_step(self, sched, n):
        latents = self._latents(n)
        self.G_opt.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)
        try:
            with self._autocast():
                fakes = self.G(latents, sched.res_log2, sched.alpha)
                loss, _ = generator_loss(self.D, fakes, sched.res_log2, sched.alpha)
            self.G_scaler.scale(loss).backward()
        finally:
            self.D.requires_grad_(True)
        value = self._finish_step(self.G, self.G_opt, self.G_scaler, loss, "G", sched)
        if value is not None:
            self._record(G_loss=value)
        return value

    @torch.no_grad()
    def ema_update(self):
        g_params = list(self.G.parameters())
        s_params = list(self.Gs.parameters())
        torch._foreach_lerp_(s_params, g_params, 1.0 - self.config.ema_beta)
        for b_s, b_g in zip(self.Gs.buffers(), self.G.buffers()):
            b_s.copy_(b_g)

    def _record(self, **values):
        for key, value in values.items():
            total, count = self._tick_stats.get(key, (0.0, 0))
            self._tick_stats[key] = (total + value, count + 1)  # tensors stay on the device until the tick ends

    def apply_schedule(self, sched):
        for group in self.G_opt.param_groups:
            group["lr"] = sched.G_lrate
        for group in self.D_opt.param_groups:
            group["lr"] = sched.D_lrate
        if self.config.reset_opt_for_new_lod and (math.floor(sched.lod) != math.floor(self.prev_lod) or
                                                  math.ceil(sched.lod) != math.ceil(self.prev_lod)):
            self.G_opt.state.clear()
            self.D_opt.state.clear()
        self.prev_lod = sched.lod

    @_on_config_backend
    def iteration(self):
        """One schedule evaluation and `minibatch_repeats` minibatches; returns the schedule used."""
        cfg = self.config
        sched = self.schedule()
        self.apply_schedule(sched)
        per_rank = sched.minibatch // self.world_size
        for _ in range(cfg.minibatch_repeats):
            for _ in range(cfg.D_repeats):
                self.d_step(sched, per_rank)
                self.ema_update()
                self.cur_nimg += sched.minibatch
            self.g_step(sched, per_rank)
        return sched

    # ---------------------------------------------------------------- outputs

    @torch.no_grad()
    @_on_config_backend
    def generate(self, latents, sched=None, net=None):
        sched = sched or self.schedule()
        net = net or self.Gs
        return net(latents, sched.res_log2, sched.alpha)

    def _grid_path(self, name):
        return os.path.join(self.run_dir, name)

    def save_grid(self, images, path):
        # Small stages are shown at the final size (nearest), as TF does, unless the grid would get too large.
        final = 2 ** self.resolution_log2
        if images.shape[-1] < final and final * self.config.grid_size <= 4096:
            images = torch.nn.functional.interpolate(images.float(), size=(final, final), mode="nearest")
        save_image_grid(images, path, nrow=self.config.grid_size)

    def _write_log(self, row):
        self._log_rows.append(row)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=LOG_FIELDS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self._log_rows)
        atomic_write(os.path.join(self.run_dir, "log.csv"), text.getvalue())
        if self._tb is not None:
            for key in LOG_FIELDS:
                if key not in ("tick", "kimg") and row[key] != "":
                    self._tb.add_scalar(f"train/{key}", float(row[key]), self.cur_nimg)
            self._tb.flush()

    def _read_log(self):
        """The log rows of the ticks the training state has completed: after a resume, rows that a killed run
        wrote past its last checkpoint are dropped (they are trained again)."""
        path = os.path.join(self.run_dir, "log.csv")
        if self.tick == 0 or not os.path.isfile(path):
            return []
        rows = []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    done = int(row["tick"]) < self.tick
                except (KeyError, TypeError, ValueError):
                    continue  # not a row this trainer wrote
                if done:
                    rows.append(row)
        return rows

    def _plot_losses(self):
        if self._figure_class is None:
            return
        fig = self._figure_class(figsize=(8, 6))
        axes = fig.subplots(2, 1, sharex=True)
        kimg = [float(r["kimg"]) for r in self._log_rows]
        for key, ax in (("G_loss", axes[0]), ("D_loss", axes[0]), ("D_real", axes[1]), ("D_fake", axes[1]),
                        ("D_gp", axes[1])):
            pts = [(k, float(r[key])) for k, r in zip(kimg, self._log_rows) if r.get(key, "") != ""]
            if pts:
                ax.plot(*zip(*pts), label=key)
        for ax in axes:
            if ax.lines:
                ax.legend(loc="best")
            ax.grid(alpha=0.3)
        axes[1].set_xlabel("kimg")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        atomic_write(os.path.join(self.run_dir, "losses.png"), buffer.getvalue())

    def end_tick(self, sched, tick_sec):
        cfg = self.config
        nimg = self.cur_nimg - self.tick_start_nimg
        stats = {k: float(total) / count for k, (total, count) in self._tick_stats.items()}
        self._tick_stats = {}
        row = {"tick": self.tick, "kimg": f"{self.cur_nimg / 1000:.3f}", "lod": f"{sched.lod:.4f}",
               "alpha": f"{sched.alpha:.4f}", "resolution": sched.resolution, "minibatch": sched.minibatch,
               "sec_per_tick": f"{tick_sec:.2f}", "sec_per_kimg": f"{tick_sec / max(nimg, 1) * 1000:.3f}",
               "img_per_s": f"{nimg / max(tick_sec, 1e-9):.1f}", "nonfinite_skips": self.nonfinite_skips,
               "fp16_overflows": self.fp16_overflows, "total_sec": f"{self.total_sec:.1f}"}
        for key in ("G_loss", "D_loss", "D_real", "D_fake", "D_gp", "D_drift", "grad_norm"):
            row[key] = f"{stats[key]:.5g}" if key in stats else ""
        self.tick += 1
        self.tick_start_nimg = self.cur_nimg
        done = self.cur_nimg >= self.total_nimg
        if self.is_main and self.run_dir is not None:
            self._write_log(row)
            self._plot_losses()
            if self.tick % cfg.image_snapshot_ticks == 0 or done:
                self.save_grid(self.generate(self.grid_latents, sched), self._grid_path(
                    f"fakes-{self.cur_nimg / 1000:08.3f}kimg.png"))
        if self.tick % cfg.network_snapshot_ticks == 0 or done:
            self.save_checkpoint(snapshot=True)
        self.log(f"tick {row['tick']:<4} kimg {row['kimg']:<9} res {sched.resolution:<4} alpha {sched.alpha:.3f} "
                 f"mb {sched.minibatch:<4} G {row['G_loss'] or '-':<9} D {row['D_loss'] or '-':<9} "
                 f"sec/kimg {row['sec_per_kimg']:<8} img/s {row['img_per_s']}", flush=True)

    # ---------------------------------------------------------------- driver

    def _barrier(self):
        if self.distributed:
            dist.barrier()

    def _all_reduce(self, tensor, op=None):
        # Gloo's worker thread releases its reference to the tensor just after wait() returns here. Were that the
        # last reference, the release would take the GIL; after the final collective of a run the interpreter may
        # already be finalizing, and the thread then aborts the whole process ("terminate called without an active
        # exception", seen at the end of a torchrun job under load). Holding the latest tensor until the trainer
        # itself is freed keeps that release a plain C++ refcount decrement.
        self._last_collective_tensor = tensor
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op is None else op)

    def _agree_stop(self):
        if not self.distributed:
            return self._stop_requested
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        self._all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _on_signal(self, signum, frame):
        self._stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        self.log(f"\n{signal.Signals(signum).name}: writing a checkpoint at the end of this iteration "
                 "(Ctrl-C again to abort)", flush=True)

    def _open_outputs(self):
        """Takes the run directory (an flock: one trainer per directory), removes what a killed run left (temporary
        files; log rows past the checkpoint), and writes config.json and, on a fresh run, the reals and initial
        fakes grids."""
        if not self.is_main or self.run_dir is None:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        check_run_dir(self.run_dir)
        self._lock_fd = lock_directory(self.run_dir)
        removed = remove_stale_temp_files(self.run_dir)
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) left by an interrupted write: {', '.join(removed)}")
        atomic_write(os.path.join(self.run_dir, "config.json"), self.config.to_json() + "\n")
        self._log_rows = self._read_log()
        missing = []
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            missing.append(("tensorboard", "TensorBoard events"))
        else:
            # Events a killed run logged after its last checkpoint (steps > cur_nimg) are purged from the view.
            self._tb = SummaryWriter(os.path.join(self.run_dir, "tensorboard"),
                                     purge_step=self.cur_nimg + 1 if self.cur_nimg else None)
        try:
            from matplotlib.figure import Figure
            self._figure_class = Figure
        except ImportError:
            missing.append(("matplotlib", "losses.png"))
        if missing:
            self.log(f"note: {' and '.join(m for m, _ in missing)} not installed, so this run writes no "
                     f"{' and no '.join(w for _, w in missing)} (pip install 'progan_fast[train]' adds them)")
        if self.cur_nimg == 0:
            from .data import sample_batch
            grid_data = torch.Generator().manual_seed(_seed_for(self.config.seed, 0, 4))
            reals = sample_batch(self.dataset, self.resolution_log2, self.config.grid_size ** 2, grid_data)
            self.save_grid(reals, self._grid_path("reals.png"))
            self.save_grid(self.generate(self.grid_latents), self._grid_path("fakes_init.png"))

    def _close_outputs(self):
        if self._tb is not None:
            self._tb.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def run(self):
        """Trains to config.total_kimg. Returns a summary dict; summary["interrupted"] after SIGINT or SIGTERM
        (checkpoint written first)."""
        self.total_nimg = int(round(self.config.total_kimg * 1000))
        try:
            self._open_outputs()
        except BaseException:
            self._close_outputs()
            raise
        # SIGINT (Ctrl-C) and SIGTERM (torchrun's agent, schedulers' preemption) stop at the next iteration boundary
        # with a checkpoint; under torchrun the ranks agree on the stop with one all_reduce per iteration.
        previous_handlers = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous_handlers[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: signals keep their usual behaviour
                break
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.total_nimg, initial=min(self.cur_nimg, self.total_nimg), unit="img",
                       unit_scale=True, dynamic_ncols=True, leave=True)
        interrupted = False
        try:
            tick_start_time = time.perf_counter()
            while self.cur_nimg < self.total_nimg:
                t0 = time.perf_counter()
                nimg0 = self.cur_nimg
                sched = self.iteration()
                now = time.perf_counter()
                self.total_sec += now - t0
                if bar is not None:
                    bar.update(min(self.cur_nimg, self.total_nimg) - min(nimg0, self.total_nimg))
                    bar.set_postfix(kimg=f"{self.cur_nimg / 1000:.1f}", res=sched.resolution,
                                    alpha=f"{sched.alpha:.2f}", img_s=f"{(self.cur_nimg - nimg0) / (now - t0):.0f}",
                                    refresh=False)
                if (self.cur_nimg >= self.tick_start_nimg + sched.tick_kimg * 1000
                        or self.cur_nimg >= self.total_nimg):
                    self.end_tick(sched, time.perf_counter() - tick_start_time)
                    tick_start_time = time.perf_counter()
                if self._agree_stop():
                    interrupted = True
                    break
            if interrupted:
                path = self.save_checkpoint()
                self.log(f"interrupted at kimg {self.cur_nimg / 1000:.3f}; checkpoint: {path}", flush=True)
            # Every rank leaves with its collectives finished: none is still in flight at destroy_process_group.
            self._barrier()
        finally:
            if bar is not None:
                bar.close()
            self._close_outputs()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return {"cur_nimg": self.cur_nimg, "interrupted": interrupted, "nonfinite_skips": self.nonfinite_skips,
                "fp16_overflows": self.fp16_overflows, "run_dir": self.run_dir, "total_sec": self.total_sec,
                "checkpoint": os.path.join(self.run_dir, checkpoint.LATEST) if self.run_dir else None}
