"""PEP 517 backend: setuptools, building against the torch already installed in the target environment.

Isolated builds (plain `pip install -e .`) normally hide the environment's packages, so a torch build requirement
would download a second multi-GB torch into the isolated build environment. When the target environment already
has torch, this backend asks for no torch and puts that environment's site-packages at the end of sys.path, so
the extension is compiled against the very torch it will run with. Only an environment without torch gets
torch as a build requirement. `pip install --no-build-isolation -e .` skips all of this.
"""
import os
import sys
import sysconfig

from setuptools import build_meta as _setuptools

TORCH_REQUIREMENT = "torch==2.14.1"


def _target_site_packages():
    paths = sysconfig.get_paths()
    return [p for p in dict.fromkeys((paths["purelib"], paths["platlib"])) if os.path.isdir(os.path.join(p, "torch"))]


def _use_target_torch():
    found = _target_site_packages()
    for path in found:
        if path not in sys.path:
            sys.path.append(path)
    return bool(found)


def get_requires_for_build_wheel(config_settings=None):
    if not _use_target_torch():
        # setup.py imports torch, so setuptools' own hook cannot run before torch is installed
        return [TORCH_REQUIREMENT]
    return _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    if not _use_target_torch():
        return [TORCH_REQUIREMENT]
    return _setuptools.get_requires_for_build_editable(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _use_target_torch()
    return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    _use_target_torch()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _use_target_torch()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _use_target_torch()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return _setuptools.build_sdist(sdist_directory, config_settings)


get_requires_for_build_sdist = _setuptools.get_requires_for_build_sdist
