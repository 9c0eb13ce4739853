"""Training configuration: one flat dataclass, saved as JSON in the run directory and inside every checkpoint.

Defaults are the official TF ones (config.py v2-1gpu preset, train.py): lod 600/600 kimg, Adam(0.001, 0.0, 0.99,
1e-8) for G and D, Adam reset on every lod change, Gs beta 0.999, 4 minibatch repeats, 1 D step per G step,
WGAN-GP lambda 10 / target 1 / drift 0.001 with the penalty on every D step (gp_interval 1), seed 1000.
"""
import dataclasses
import json
import math
from typing import Dict, Optional

from ..cpuinfo import has_amx_bf16
from ..ops.winograd import ALGORITHMS
from .schedule import (DEFAULT_MINIBATCH_BASE, DEFAULT_MINIBATCH_DICT, DEFAULT_TICK_KIMG_BASE,
                       DEFAULT_TICK_KIMG_DICT, TrainingSchedule, check_resolution)

AMP_MODES = ("none", "bf16", "fp16")
NONFINITE_POLICIES = ("skip", "stop")
CONV_ALGORITHMS = ALGORITHMS
MEMORY_FORMATS = ("auto", "nchw", "channels_last")
_DICT_FIELDS = ("minibatch_dict", "max_minibatch_per_gpu", "G_lrate_dict", "D_lrate_dict", "tick_kimg_dict")
# The fields that fix the networks' parameter shapes: a resumed run must keep them (latent_size compared by value).
ARCHITECTURE_FIELDS = ("fmap_base", "fmap_max", "fmap_decay", "latent_size", "normalize_latents", "mbstd_group_size")
SEED_RANGE = (0, 2 ** 63 - 1)


def check_seed(seed, name="seed"):
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"{name} must be an integer in [0, 2**63 - 1]; got {seed!r}")
    return seed


@dataclasses.dataclass
class TrainConfig:
    data: Optional[str] = None              # dataset directory; None = the embedded default dataset
    resolution: Optional[int] = None        # final resolution; None = the dataset's
    start_resolution: int = 4               # TF lod_initial_resolution
    total_kimg: float = 12000.0
    lod_training_kimg: float = 600.0
    lod_transition_kimg: float = 600.0
    minibatch_base: int = DEFAULT_MINIBATCH_BASE
    minibatch_dict: Dict[int, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MINIBATCH_DICT))
    max_minibatch_per_gpu: Dict[int, int] = dataclasses.field(default_factory=dict)
    minibatch_repeats: int = 4
    D_repeats: int = 1
    G_lrate: float = 0.001
    D_lrate: float = 0.001
    G_lrate_dict: Dict[int, float] = dataclasses.field(default_factory=dict)
    D_lrate_dict: Dict[int, float] = dataclasses.field(default_factory=dict)
    adam_beta1: float = 0.0
    adam_beta2: float = 0.99
    adam_eps: float = 1e-8
    reset_opt_for_new_lod: bool = True
    ema_beta: float = 0.999
    mirror: bool = False
    fmap_base: int = 8192
    fmap_max: int = 512
    fmap_decay: float = 1.0
    latent_size: Optional[int] = None       # None = min(fmap_base, fmap_max), as TF
    normalize_latents: bool = True
    mbstd_group_size: int = 4
    wgan_lambda: float = 10.0
    wgan_target: float = 1.0
    wgan_epsilon: float = 0.001
    gp_interval: int = 1                    # lazy regularization: the gradient penalty on every K-th D step, x K
    amp: str = "none"
    backend: str = "auto"
    conv_algorithm: str = "direct"          # "winograd": the 3x3 convs by F(4x4, 3x3) on the CPU (ops/winograd.py)
    memory_format: str = "auto"             # activations' layout: "nchw", "channels_last"; auto: resolve_memory_format
    seed: int = 1000
    tick_kimg_base: float = DEFAULT_TICK_KIMG_BASE
    tick_kimg_dict: Dict[int, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_TICK_KIMG_DICT))
    image_snapshot_ticks: int = 1
    network_snapshot_ticks: int = 10
    grid_size: int = 8                      # the sample grid is grid_size x grid_size images
    nonfinite: str = "skip"                 # non-finite loss: skip the step and count it, or stop

    def validate(self):
        check_resolution("start_resolution", self.start_resolution)
        if self.resolution is not None:
            check_resolution("resolution", self.resolution)
            if self.start_resolution > self.resolution:
                raise ValueError(f"start_resolution ({self.start_resolution}) must not exceed resolution "
                                 f"({self.resolution})")
        for name in ("total_kimg", "lod_training_kimg", "lod_transition_kimg"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value}")
        for name in ("minibatch_base", "minibatch_repeats", "D_repeats", "fmap_base", "fmap_max", "grid_size",
                     "image_snapshot_ticks", "network_snapshot_ticks", "gp_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if isinstance(self.mbstd_group_size, bool) or not isinstance(self.mbstd_group_size, int) or \
                self.mbstd_group_size < 0:
            raise ValueError(f"mbstd_group_size must be an int >= 0 (<= 1 turns the layer off); got "
                             f"{self.mbstd_group_size!r}")
        if not (isinstance(self.fmap_decay, (int, float)) and math.isfinite(self.fmap_decay) and self.fmap_decay >= 0):
            raise ValueError(f"fmap_decay must be a finite number >= 0; got {self.fmap_decay!r}")
        check_seed(self.seed)
        if self.latent_size is not None and (not isinstance(self.latent_size, int) or self.latent_size < 1):
            raise ValueError(f"latent_size must be a positive int or None; got {self.latent_size!r}")
        for name in ("G_lrate", "D_lrate", "tick_kimg_base"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1); got {self.ema_beta}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}; got {self.amp!r}")
        if self.conv_algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"conv_algorithm must be one of {', '.join(CONV_ALGORITHMS)}; got {self.conv_algorithm!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}; got {self.memory_format!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}; got {self.nonfinite!r}")
        for name in _DICT_FIELDS:
            for key, value in getattr(self, name).items():
                check_resolution(f"{name} key", key)
                if not value > 0:
                    raise ValueError(f"{name}[{key}] must be > 0; got {value}")
        return self

    def num_features(self, stage):
        """Feature maps of the networks' stage (models.num_features under this config)."""
        from ..models import num_features
        return num_features(stage, self.fmap_base, self.fmap_decay, self.fmap_max)

    def effective_latent_size(self):
        return self.num_features(0) if self.latent_size is None else self.latent_size

    def validate_run(self, resolution_log2, world_size=1):
        """What validate() cannot know without the final resolution and the number of processes: every network
        stage has at least one feature map, and every minibatch of the schedule splits into groups for D's
        minibatch-stddev layer. Raises ValueError naming the setting to change."""
        self.validate()
        resolution = 2 ** resolution_log2
        if self.start_resolution > resolution:
            raise ValueError(f"start_resolution ({self.start_resolution}) exceeds the resolution ({resolution})")
        for stage in range(resolution_log2):
            if self.num_features(stage) < 1:
                need = math.ceil(2.0 ** (stage * self.fmap_decay))
                raise ValueError(f"fmap_base {self.fmap_base} leaves no feature maps at stage {stage} of a "
                                 f"{resolution}x{resolution} network (min(int(fmap_base / 2^(stage * fmap_decay)), "
                                 f"fmap_max) = 0); use fmap_base >= {need}")
        group = self.mbstd_group_size
        start_log2 = self.start_resolution.bit_length() - 1
        for res_log2 in range(start_log2, resolution_log2 + 1):
            res = 2 ** res_log2
            minibatch = TrainingSchedule(0, **dict(self.schedule_kwargs(res_log2, world_size),
                                                   lod_initial_resolution=res)).minibatch
            per_rank = minibatch // world_size
            if group > 1 and per_rank > group and per_rank % group:
                processes = f" over {world_size} processes" if world_size > 1 else ""
                raise ValueError(f"the minibatch at {res}x{res} is {minibatch}{processes}: {per_rank} samples per "
                                 f"step, which D's minibatch-stddev layer cannot split into groups of "
                                 f"{group} (mbstd_group_size); use a multiple of {group * world_size} or at most "
                                 f"{group * world_size}")
        return self

    def architecture_conflicts(self, other):
        """[(field, self's value, other's value)] for the fields that fix the parameter shapes and differ."""
        out = []
        for name in ARCHITECTURE_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "latent_size":
                mine, theirs = self.effective_latent_size(), other.effective_latent_size()
            if mine != theirs:
                out.append((name, mine, theirs))
        return out

    def to_dict(self):
        d = dataclasses.asdict(self)
        for name in _DICT_FIELDS:
            d[name] = {str(k): v for k, v in d[name].items()}  # JSON object keys are strings
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        d = dict(d)
        for name in _DICT_FIELDS:
            if name in d:
                d[name] = {int(k): v for k, v in d[name].items()}
        return cls(**d)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def schedule_kwargs(self, resolution_log2, num_gpus):
        """Keyword arguments of TrainingSchedule for this config."""
        return dict(resolution_log2=resolution_log2, lod_initial_resolution=self.start_resolution,
                    lod_training_kimg=self.lod_training_kimg, lod_transition_kimg=self.lod_transition_kimg,
                    minibatch_base=self.minibatch_base, minibatch_dict=self.minibatch_dict,
                    max_minibatch_per_gpu=self.max_minibatch_per_gpu, G_lrate_base=self.G_lrate,
                    G_lrate_dict=self.G_lrate_dict, D_lrate_base=self.D_lrate, D_lrate_dict=self.D_lrate_dict,
                    tick_kimg_base=self.tick_kimg_base, tick_kimg_dict=self.tick_kimg_dict, num_gpus=num_gpus)


def resolve_memory_format(config, device_type, cpu_flags=None):
    """(channels_last, reason): the activations' layout a run uses. `auto` takes channels_last where it was measured
    faster: Winograd (its transforms read channels_last; NCHW activations would be copied around each conv) and bf16
    on a CPU with AMX (oneDNN's channels_last bf16 convs; a whole step 1.20x NCHW on the demo's networks, 1.8x at
    64x64 with 128 maps, Xeon with AMX). Elsewhere NCHW: float32 channels_last gained 1.07x on the demo's networks
    and nothing was measured for bf16 without AMX or on GPUs."""
    if config.memory_format != "auto":
        return config.memory_format == "channels_last", "--memory-format " + config.memory_format
    if config.conv_algorithm == "winograd":
        return True, "auto: Winograd convolutions read channels_last"
    if device_type == "cpu" and config.amp == "bf16" and has_amx_bf16(cpu_flags):
        return True, "auto: bf16 on a CPU with AMX (oneDNN's channels_last bf16 convolutions)"
    return False, "auto"
