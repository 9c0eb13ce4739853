"""The schedule against the official TF formula, restated here independently in exact rational arithmetic."""
import math
from fractions import Fraction

import pytest

from progan_fast.train.schedule import DEFAULT_MINIBATCH_DICT, DEFAULT_TICK_KIMG_DICT, TrainingSchedule


def official_lod(cur_nimg, R, initial_resolution, training_kimg, transition_kimg):
    kimg = Fraction(cur_nimg, 1000)
    phase = Fraction(training_kimg) + Fraction(transition_kimg)
    phase_idx = math.floor(kimg / phase)
    phase_kimg = kimg - phase_idx * phase
    lod = R - int(math.log2(initial_resolution)) - phase_idx
    lod -= max(phase_kimg - Fraction(training_kimg), 0) / Fraction(transition_kimg)
    return max(lod, Fraction(0))


NIMGS = sorted({0, 1, 999, 300_000, 599_999, 600_000, 600_001, 750_000, 900_000, 1_199_999, 1_200_000,
                1_500_000, 1_800_000, 2_345_678, 9_000_000, 9_300_000, 9_599_999, 9_600_000, 12_000_000}
               | set(range(0, 12_000_000, 77_777)))


@pytest.mark.parametrize("cur_nimg", NIMGS)
def test_matches_official_formula_1024(cur_nimg):
    s = TrainingSchedule(cur_nimg, resolution_log2=10)
    lod = official_lod(cur_nimg, 10, 4, 600, 600)
    assert s.lod == pytest.approx(float(lod), abs=1e-12)
    res_log2 = 10 - math.floor(lod)
    assert s.res_log2 == res_log2 and s.resolution == 2 ** res_log2
    assert s.alpha == pytest.approx(float(1 - (lod - math.floor(lod))), abs=1e-12)
    assert s.minibatch == DEFAULT_MINIBATCH_DICT.get(2 ** res_log2, 4)
    assert s.tick_kimg == DEFAULT_TICK_KIMG_DICT[2 ** res_log2]
    assert s.lr == (0.001, 0.001)


@pytest.mark.parametrize("start, end, old, new", [(600, 1200, 4, 8), (1800, 2400, 8, 16), (3000, 3600, 16, 32),
                                                  (9000, 9600, 512, 1024)])
def test_1024_fades(start, end, old, new):
    # Before the fade: the old resolution, fully blended in.
    before = TrainingSchedule(start * 1000, resolution_log2=10)
    assert (before.resolution, before.alpha) == (old, 1.0)
    # During the fade the new resolution is current and its path's weight rises linearly from 0 to 1.
    for frac in (0.001, 0.25, 0.5, 0.75, 0.999):
        s = TrainingSchedule(round((start + frac * (end - start)) * 1000), resolution_log2=10)
        assert s.resolution == new
        assert s.alpha == pytest.approx(frac, abs=1e-9)
    after = TrainingSchedule(end * 1000, resolution_log2=10)
    assert (after.resolution, after.alpha) == (new, 1.0)


def test_final_resolution_stays():
    s = TrainingSchedule(15_000_000, resolution_log2=10)
    assert (s.lod, s.resolution, s.alpha) == (0.0, 1024, 1.0)


@pytest.mark.parametrize("cur_nimg", [0, 5_000, 12_345, 20_000, 31_000, 44_444, 90_000])
def test_custom_schedule(cur_nimg):
    kw = dict(resolution_log2=6, lod_initial_resolution=8, lod_training_kimg=7, lod_transition_kimg=3)
    s = TrainingSchedule(cur_nimg, minibatch_base=12, minibatch_dict={16: 24}, G_lrate_dict={32: 0.002},
                         D_lrate_dict={64: 0.003}, tick_kimg_base=2, tick_kimg_dict={8: 1}, **kw)
    lod = official_lod(cur_nimg, 6, 8, 7, 3)
    res = 2 ** (6 - math.floor(lod))
    assert s.lod == pytest.approx(float(lod), abs=1e-12) and s.resolution == res
    assert s.minibatch == {16: 24}.get(res, 12)
    assert s.G_lrate == {32: 0.002}.get(res, 0.001) and s.D_lrate == {64: 0.003}.get(res, 0.001)
    assert s.tick_kimg == {8: 1}.get(res, 2)


def test_start_resolution_first_phase():
    s = TrainingSchedule(0, resolution_log2=6, lod_initial_resolution=16)
    assert (s.resolution, s.lod, s.alpha) == (16, 2.0, 1.0)


def test_multi_gpu_rounding_and_cap():
    s = TrainingSchedule(0, resolution_log2=10, minibatch_base=13, minibatch_dict={}, num_gpus=4)
    assert s.minibatch == 12
    s = TrainingSchedule(0, resolution_log2=10, minibatch_dict={4: 64}, max_minibatch_per_gpu={4: 8}, num_gpus=2)
    assert s.minibatch == 16


def test_zero_transition_jumps():
    s = TrainingSchedule(1000, resolution_log2=5, lod_training_kimg=1, lod_transition_kimg=0)
    assert (s.resolution, s.alpha) == (8, 1.0)


@pytest.mark.parametrize("kw, match", [(dict(lod_initial_resolution=6), "power of two"),
                                       (dict(lod_initial_resolution=2048), "lod_initial_resolution"),
                                       (dict(lod_training_kimg=-1), "lod_training_kimg"),
                                       (dict(minibatch_base=1, minibatch_dict={}, num_gpus=2), "minibatch")])
def test_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainingSchedule(0, resolution_log2=10, **kw)
