import pytest

from progan_fast.train.config import TrainConfig


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from progan_fast.train.data import default_dataset
    return default_dataset(str(tmp_path_factory.mktemp("data") / "shapes8"), resolution=8)


@pytest.fixture
def tiny_config(tiny_data):
    """An 8x8 run: 4x4 for 0.1 kimg, fade to 8x8 over 0.1 kimg, then 8x8; 32 images per iteration."""
    def make(**overrides):
        base = dict(data=tiny_data, resolution=8, lod_training_kimg=0.1, lod_transition_kimg=0.1,
                    total_kimg=0.3, minibatch_base=8, minibatch_dict={}, fmap_base=32, fmap_max=16,
                    latent_size=16, tick_kimg_base=100.0, tick_kimg_dict={}, grid_size=2, seed=7)
        base.update(overrides)
        return TrainConfig(**base)
    return make


@pytest.fixture(autouse=True)
def _one_thread():
    # The training tests use tiny networks, where intra-op threads only add synchronisation; on a loaded machine
    # OpenMP spinning makes a multi-threaded step 10-50x slower.
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
