"""The unfused plain-PyTorch baseline of the train-step benchmark (benchmarks/baseline.py) is the same network as
progan_fast.models: same parameters (names, shapes, count) and, given the same weights, the same outputs."""
import pytest
import torch

import progan_fast
from benchmarks import baseline
from progan_fast import ops
from progan_fast.models import Discriminator, Generator

CONFIG = dict(resolution=32, fmap_base=128, fmap_max=16)  # nf: 16 at 4..16, 8 at 32


def _shapes(module):
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def test_same_parameters_as_progan_fast_at_1024():
    with torch.device("meta"):
        pairs = [(Generator(1024), baseline.Generator(1024)), (Discriminator(1024), baseline.Discriminator(1024))]
    for ours, theirs in pairs:
        assert _shapes(ours) == _shapes(theirs)
        assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())


def _pair(ours_cls, base_cls, seed):
    torch.manual_seed(seed)
    ours = ours_cls(**CONFIG).double()
    with torch.no_grad():
        for p in ours.parameters():
            if p.dim() == 1:
                p.normal_()  # the biases start at zero: make them count
    base = base_cls(**CONFIG).double()
    base.load_state_dict(ours.state_dict())
    return ours, base


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("alpha", [1.0, 0.35])
def test_outputs_equal_progan_fast_float64(backend, alpha):
    G, G_base = _pair(Generator, baseline.Generator, 0)
    D, D_base = _pair(Discriminator, baseline.Discriminator, 1)
    z = torch.randn(8, G.latent_size, dtype=torch.float64)
    with progan_fast.use_backend(None if backend == "auto" else backend):
        for res_log2 in range(2, 6):
            fakes = G(z, res_log2, alpha)
            torch.testing.assert_close(G_base(z, res_log2, alpha), fakes, rtol=1e-10, atol=1e-10)
            images = torch.randn_like(fakes)
            torch.testing.assert_close(D_base(images, res_log2, alpha), D(images, res_log2, alpha),
                                       rtol=1e-10, atol=1e-10)
            if res_log2 > 2:
                torch.testing.assert_close(baseline.fade_reals(images, alpha), ops.fade_reals(images, alpha),
                                           rtol=1e-12, atol=1e-12)


def test_input_gradients_equal_progan_fast_float64():
    """The gradient penalty differentiates D with respect to its input: the two must agree there too."""
    D, D_base = _pair(Discriminator, baseline.Discriminator, 2)
    images = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    grads = []
    for net in (D, D_base):
        x = images.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(x, 5, 0.6).sum(), x)
        grads.append(g)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-10)
