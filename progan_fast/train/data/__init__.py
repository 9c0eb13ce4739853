"""Training data: a multi-resolution image cache (one memory-mapped uint8 NCHW .npy per level; layout.py), its
creation from a folder of images (create.py), the deterministic minibatch sampler (reading.py), and the embedded
procedural default dataset (shapes.py). writer.py publishes a dataset directory atomically for both creators."""
from .create import IMAGE_EXTENSIONS, DatasetReport, create_dataset
from .layout import FORMAT, FORMAT_VERSION, MANIFEST
from .reading import MultiResDataset, sample_batch
from .shapes import SHAPES_VERSION, cache_dir, default_dataset, default_dataset_path

__all__ = ["FORMAT", "FORMAT_VERSION", "IMAGE_EXTENSIONS", "MANIFEST", "SHAPES_VERSION", "DatasetReport",
           "MultiResDataset", "cache_dir", "create_dataset", "default_dataset", "default_dataset_path",
           "sample_batch"]
