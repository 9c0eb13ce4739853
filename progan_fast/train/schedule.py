"""The progressive-growing schedule, as the official TF implementation's `TrainingSchedule` computes it.

kimg = cur_nimg / 1000, phase = lod_training_kimg + lod_transition_kimg, phase_idx = floor(kimg / phase),
phase_kimg = kimg - phase_idx * phase,
lod = R - floor(log2(lod_initial_resolution)) - phase_idx - max(phase_kimg - lod_training_kimg, 0) / transition,
lod = max(lod, 0), resolution = 2^(R - floor(lod)).

Each phase trains `lod_training_kimg` at one resolution, then fades the next one in over `lod_transition_kimg`.
During a fade `resolution` is already the new one, so the minibatch, learning rates and tick length come from the
new resolution's entries. `alpha` is the weight of the newest resolution's path, 1 - frac(lod) (TF stores the
complement, the old path's weight, in `lod` itself).
"""
import math

# TF official defaults (config.py / train.py): the v2-1gpu minibatch preset and the tick lengths.
DEFAULT_MINIBATCH_DICT = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}
DEFAULT_MINIBATCH_BASE = 4
DEFAULT_TICK_KIMG_DICT = {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 20, 1024: 10}
DEFAULT_TICK_KIMG_BASE = 160


class TrainingSchedule:
    """The schedule's values at `cur_nimg` images shown.

    Attributes: kimg, lod, res_log2, resolution, alpha, minibatch, G_lrate, D_lrate, tick_kimg.
    `minibatch` is the global minibatch (all ranks together), rounded down to a multiple of `num_gpus` and capped
    by `max_minibatch_per_gpu[resolution] * num_gpus` as TF does.
    """

    def __init__(self, cur_nimg, *, resolution_log2, lod_initial_resolution=4, lod_training_kimg=600.0,
                 lod_transition_kimg=600.0, minibatch_base=DEFAULT_MINIBATCH_BASE, minibatch_dict=None,
                 max_minibatch_per_gpu=None, G_lrate_base=0.001, G_lrate_dict=None, D_lrate_base=0.001,
                 D_lrate_dict=None, tick_kimg_base=DEFAULT_TICK_KIMG_BASE, tick_kimg_dict=None, num_gpus=1):
        if cur_nimg < 0:
            raise ValueError(f"cur_nimg must be >= 0; got {cur_nimg}")
        if lod_training_kimg < 0 or lod_transition_kimg < 0:
            raise ValueError("lod_training_kimg and lod_transition_kimg must be >= 0; got "
                             f"{lod_training_kimg} and {lod_transition_kimg}")
        check_resolution("lod_initial_resolution", lod_initial_resolution)
        if not 2 <= math.log2(lod_initial_resolution) <= resolution_log2:
            raise ValueError(f"lod_initial_resolution must be between 4 and 2^resolution_log2 = "
                             f"{2 ** resolution_log2}; got {lod_initial_resolution}")
        minibatch_dict = DEFAULT_MINIBATCH_DICT if minibatch_dict is None else minibatch_dict
        tick_kimg_dict = DEFAULT_TICK_KIMG_DICT if tick_kimg_dict is None else tick_kimg_dict

        self.kimg = cur_nimg / 1000.0
        phase_dur = lod_training_kimg + lod_transition_kimg
        phase_idx = int(math.floor(self.kimg / phase_dur)) if phase_dur > 0 else 0
        phase_kimg = self.kimg - phase_idx * phase_dur
        lod = float(resolution_log2 - int(math.floor(math.log2(lod_initial_resolution))) - phase_idx)
        if lod_transition_kimg > 0:
            lod -= max(phase_kimg - lod_training_kimg, 0.0) / lod_transition_kimg
        self.lod = max(lod, 0.0)
        self.res_log2 = resolution_log2 - int(math.floor(self.lod))
        self.resolution = 2 ** self.res_log2
        self.alpha = 1.0 - (self.lod - math.floor(self.lod))

        minibatch = (minibatch_dict or {}).get(self.resolution, minibatch_base)
        minibatch -= minibatch % num_gpus
        if max_minibatch_per_gpu and self.resolution in max_minibatch_per_gpu:
            minibatch = min(minibatch, max_minibatch_per_gpu[self.resolution] * num_gpus)
        if minibatch <= 0:
            raise ValueError(f"the minibatch at resolution {self.resolution} is {minibatch}; it must be a positive "
                             f"multiple of the number of processes ({num_gpus})")
        self.minibatch = minibatch
        self.G_lrate = (G_lrate_dict or {}).get(self.resolution, G_lrate_base)
        self.D_lrate = (D_lrate_dict or {}).get(self.resolution, D_lrate_base)
        self.tick_kimg = tick_kimg_dict.get(self.resolution, tick_kimg_base)

    @property
    def lr(self):
        """(G learning rate, D learning rate)."""
        return self.G_lrate, self.D_lrate

    def __repr__(self):
        return (f"TrainingSchedule(kimg={self.kimg:g}, lod={self.lod:.4f}, resolution={self.resolution}, "
                f"alpha={self.alpha:.4f}, minibatch={self.minibatch}, lr=({self.G_lrate:g}, {self.D_lrate:g}))")


def check_resolution(name, value):
    """`value` must be an int power of two >= 4."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int power of two >= 4; got {value!r}")
    if value < 4 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 4; got {value}")
    return value
