import pytest

import progan_fast
from progan_fast.patch import _common


@pytest.fixture(autouse=True)
def _class_level_reset():
    """Class-level patching is process-wide: every test starts and ends with every library class unpatched."""
    progan_fast.unpatch()
    yield
    progan_fast.unpatch()
    assert not _common._class_level
