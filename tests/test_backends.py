"""Backend selection, forcing, fallback and the import guarantees of progan_fast."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import progan_fast
from progan_fast import _extension, backends

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_automatic_choice_on_cpu_is_the_cpu_kernel():
    assert backends.resolve("pixel_norm", torch.device("cpu")) == "cpu"


def test_forcing_and_restoring():
    with progan_fast.use_backend("reference"):
        assert progan_fast.get_backend() == "reference"
        assert backends.resolve("pixel_norm", torch.device("cpu")) == "reference"
    assert progan_fast.get_backend() is None


def test_forced_backend_that_cannot_run_on_the_device_names_it():
    with progan_fast.use_backend("cpu"):
        with pytest.raises(backends.BackendUnavailable, match="'cpu' cannot run pixel_norm on cuda tensors"):
            backends.resolve("pixel_norm", torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_forcing_cuda_without_a_gpu_says_what_is_missing():
    with pytest.raises(backends.BackendUnavailable, match="backend 'cuda' is unavailable: .*"):
        progan_fast.set_backend("cuda")
    assert progan_fast.get_backend() is None


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend must be one of cpu, cuda, triton, reference"):
        progan_fast.set_backend("tpu")


def run_python(code, cwd, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_environment_variable_forces_and_validates(tmp_path):
    code = """
        import torch, progan_fast
        print(progan_fast.get_backend(), progan_fast.backends.resolve("pixel_norm", torch.device("cpu")))
    """
    ok = run_python(code, REPO, {"PROGAN_FAST_BACKEND": "reference"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["reference", "reference"]
    bad = run_python(code, REPO, {"PROGAN_FAST_BACKEND": "fastest"})
    assert bad.returncode != 0
    assert "PROGAN_FAST_BACKEND must be one of cpu, cuda, triton, reference or auto; got 'fastest'" in bad.stderr


def test_import_without_extension_or_triton_uses_reference_with_one_warning(tmp_path):
    """A copy of the Python sources alone (no compiled _C), with triton hidden: import works, one warning."""
    shutil.copytree(os.path.join(REPO, "progan_fast"), tmp_path / "progan_fast",
                    ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    code = """
        import sys, warnings
        # an editable install's import hook would find the built checkout before this copy: drop it
        sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
        sys.modules["triton"] = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch, progan_fast
            x = torch.randn(2, 4, 3, 3)
            y = progan_fast.pixel_norm(x)
            y = progan_fast.pixel_norm(x)
        ours = [str(w.message) for w in caught if "progan_fast" in str(w.message)]
        print(len(ours)); print(ours[0])
        print(progan_fast.backends.resolve("pixel_norm", torch.device("cpu")))
        print(progan_fast.backends.available("triton")[1])
        torch.testing.assert_close(y, progan_fast.reference.pixel_norm(x))
    """
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1"
    assert "using the reference backend: progan_fast._C is not built" in lines[1]
    assert "pip install --no-build-isolation -e ." in lines[1]
    assert lines[2] == "reference"
    assert lines[3] == "triton is not installed"


def test_extension_built_for_another_torch_is_refused_before_loading(tmp_path, monkeypatch):
    info = tmp_path / "_C.build_info"
    info.write_text("torch=1.0.0;cuda=0")
    monkeypatch.setattr(_extension, "_BUILD_INFO_FILE", str(info))
    loaded, has_cuda, reason = _extension.load()
    assert not loaded and not has_cuda
    assert f"built against torch 1.0.0 but torch {torch.__version__} is running" in reason
    assert "pip install --no-build-isolation -e ." in reason


def test_env_report_lists_versions_backends_and_ops():
    from progan_fast import env
    text = env.report()
    assert f"torch        {torch.__version__}" in text
    for name in backends.BACKENDS:
        assert f"  {name}" in text
    assert "pixel_norm" in text
    if backends.available("cpu")[0]:
        assert f"CPU ISA      {torch.ops.progan_fast._cpu_isa_variants()[0]} " in text
