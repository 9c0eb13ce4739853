"""Loads the compiled extension progan_fast._C, refusing one built against another torch.

A mismatched build is detected from the torch version recorded next to it at build time, before the shared
library is opened, so the user sees how to rebuild instead of an undefined-symbol error.
"""
import importlib
import os

import torch

REBUILD_HINT = "rebuild it with: pip install --no-build-isolation -e . (or: make test)"
_BUILD_INFO_FILE = os.path.join(os.path.dirname(__file__), "_C.build_info")


def _read_build_info():
    try:
        with open(_BUILD_INFO_FILE) as f:
            return dict(item.split("=", 1) for item in f.read().split(";") if "=" in item)
    except OSError:
        return None


def load():
    """Returns (loaded, has_cuda_kernels, reason_if_not_loaded)."""
    info = _read_build_info()
    if info is not None and info.get("torch") != torch.__version__:
        return False, False, (f"progan_fast._C was built against torch {info.get('torch')} but torch "
                              f"{torch.__version__} is running; {REBUILD_HINT}")
    try:
        importlib.import_module("._C", __package__)
    except ImportError as e:
        if "undefined symbol" in str(e):
            return False, False, f"progan_fast._C does not match the running torch ({e}); {REBUILD_HINT}"
        return False, False, f"progan_fast._C is not built ({e}); {REBUILD_HINT}"
    built = dict(item.split("=", 1) for item in torch.ops.progan_fast._build_info().split(";"))
    if built["torch"] != torch.__version__:
        return False, False, (f"progan_fast._C was built against torch {built['torch']} but torch "
                              f"{torch.__version__} is running; {REBUILD_HINT}")
    return True, built.get("cuda") == "1", None
