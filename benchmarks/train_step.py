"""One WGAN-GP training iteration of progan_fast.models (shared by the train-step and data-loader benchmarks).

Written here from progan_fast.models, independent of progan_fast.train's loop: TF official losses (G_wgan,
D_wgangp: lambda 10, gamma 1, drift 0.001 on reals, means over the minibatch), Adam(betas=(0, 0.99), eps=1e-8)
for each network, fade_reals on the reals while fading (TF official process_reals). One call:
  D step: G forward on fresh latents (no grad), D on fade_reals(reals), D on fakes, D on the per-sample mix and
          its input gradient with create_graph (double backward), drift, backward, Adam step;
  G step: G forward on fresh latents, D forward (D's parameters frozen), backward, Adam step.
"""
import torch

import progan_fast
from progan_fast import ops
from progan_fast.models import Discriminator, Generator

# Small config: nf = 128 feature maps at 4..16, 64 at 32x32.
CONFIG = {"fmap_base": 1024, "fmap_max": 128, "latent_size": 128, "minibatch": 16, "resolution": 32}
# Smoke mode (--benchmark-disable) only checks that every case runs: 16x fewer conv FLOPs, same code paths.
SMOKE_CONFIG = {"fmap_base": 256, "fmap_max": 32, "latent_size": 32, "minibatch": 8, "resolution": 32}
GP_LAMBDA, GP_TARGET, DRIFT = 10.0, 1.0, 0.001
LR = 1e-3


def build_step(res_log2, alpha, impl, channels_last, seed=0, config=CONFIG):
    """A callable running one training iteration (D step, then G step) under progan_fast backend `impl`; it
    returns (d_loss, g_loss) as 0-dim tensors."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter init
    G = Generator(config["resolution"], latent_size=config["latent_size"], fmap_base=config["fmap_base"],
                  fmap_max=config["fmap_max"], channels_last=channels_last)
    D = Discriminator(config["resolution"], fmap_base=config["fmap_base"], fmap_max=config["fmap_max"],
                      channels_last=channels_last)
    g_opt = torch.optim.Adam(G.parameters(), lr=LR, betas=(0.0, 0.99), eps=1e-8)
    d_opt = torch.optim.Adam(D.parameters(), lr=LR, betas=(0.0, 0.99), eps=1e-8)
    n, size = config["minibatch"], 2 ** res_log2
    reals = torch.rand(n, 3, size, size, generator=gen) * 2 - 1

    def latents():
        return torch.randn(n, config["latent_size"], generator=gen)

    def step():
        with progan_fast.use_backend(impl):
            d_opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                fakes = G(latents(), res_log2, alpha)
            x = ops.fade_reals(reals, alpha)
            real_scores = D(x, res_log2, alpha)
            fake_scores = D(fakes, res_log2, alpha)
            mix = torch.rand(n, 1, 1, 1, generator=gen)
            mixed = torch.lerp(x, fakes, mix).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(mixed, res_log2, alpha).sum(), mixed, create_graph=True)
            penalty = (grad.flatten(1).norm(dim=1) - GP_TARGET).square() * (GP_LAMBDA / GP_TARGET ** 2)
            d_loss = (fake_scores - real_scores).squeeze(1) + penalty + DRIFT * real_scores.squeeze(1).square()
            d_loss = d_loss.mean()
            d_loss.backward()
            d_opt.step()

            D.requires_grad_(False)
            try:
                g_opt.zero_grad(set_to_none=True)
                g_loss = -D(G(latents(), res_log2, alpha), res_log2, alpha).mean()
                g_loss.backward()
                g_opt.step()
            finally:
                D.requires_grad_(True)
        return d_loss.detach(), g_loss.detach()

    return step
