"""Training steps of other ProGAN trainers, with and without progan_fast.patch (shared by benchmarks/test_patch.py).

pro-gan-pth 3.4: one batch repeat of its own `ProGAN.train` loop, through its own methods: optimize_discriminator
(WganGP: means, drift 0.001, gradient penalty with create_graph), update_average (the EMA shadow), then
optimize_generator, with Adam(lr 0.003, betas (0, 0.99), eps 1e-8) as train() creates it. Its networks cannot run
unpatched on torch 2.14 (EqualizedConvTranspose2d.forward raises a TypeError), so the baseline is
`progan_fast.patch(trainer, <every switch off>)`: only that layer's compatibility forward, which is the library's
own math (weight * scale, bias unscaled).

pytorch_GAN_zoo PGAN (the stand-in written from its documented math in tests/patch/gan_zoo): one iteration as its
trainer runs it: D step (WGAN-GP with sums over the batch, drift 0.001, lambda 10), G step, then the EMA generator
update (beta 0.999), Adam(lr 0.001, betas (0, 0.99)); reals faded as its trainer does (alpha = old path's weight).

Both networks of a pair start from the same parameters; each step advances its own optimizer state.
"""
import contextlib
import copy
from unittest import mock

import torch
import torch.nn.functional as F

import progan_fast

OFF = {"pixel_norm": False, "eq_conv": False, "mbstd": False, "fade": False, "resample": False}


def pro_gan_pth_step(patched, depth, batch, alpha, channels=None, latent_size=512, seed=0):
    """A callable running one pro-gan-pth training step; channels: None for the library's table (nf(stage) =
    min(16384 / 2^stage, 512)), or an int for every stage (the library's nf replaced while building)."""
    from pro_gan_pytorch import networks
    from pro_gan_pytorch.custom_layers import update_average
    from pro_gan_pytorch.gan import ProGAN
    from pro_gan_pytorch.losses import WganGP

    torch.manual_seed(seed)
    table = mock.patch.object(networks, "nf", lambda stage: channels) if channels else contextlib.nullcontext()
    with table:
        gen = networks.Generator(depth=depth, latent_size=latent_size)
        dis = networks.Discriminator(depth=depth, latent_size=latent_size)
    with contextlib.redirect_stdout(None):
        trainer = ProGAN(gen, dis, device=torch.device("cpu"), use_ema=True)
    progan_fast.patch(trainer, **({} if patched else OFF))
    gen_optim = torch.optim.Adam(trainer.gen.parameters(), lr=0.003, betas=(0.0, 0.99), eps=1e-8)
    dis_optim = torch.optim.Adam(trainer.dis.parameters(), lr=0.003, betas=(0.0, 0.99), eps=1e-8)
    loss = WganGP()
    data = torch.Generator().manual_seed(seed + 1)
    reals = torch.rand(batch, 3, 2 ** depth, 2 ** depth, generator=data) * 2 - 1
    noise = torch.randn(batch, latent_size, generator=data)

    def step():
        d_loss = trainer.optimize_discriminator(loss, dis_optim, noise, reals, depth, alpha)
        update_average(trainer.gen_shadow, trainer.gen, beta=trainer.ema_beta)
        g_loss = trainer.optimize_generator(loss, gen_optim, noise, reals, depth, alpha)
        return d_loss, g_loss

    return step


def gan_zoo_networks(channels, scales, latent_size, seed=0):
    from tests.patch.gan_zoo.models.networks.progressive_conv_net import DNet, GNet
    torch.manual_seed(seed)
    g = GNet(latent_size, channels)
    d = DNet(channels, miniBatchNormalization=True)
    for _ in range(scales):
        g.addScale(channels)
        d.addScale(channels)
    return g, d


def gan_zoo_step(networks, patched, batch, alpha, seed=0):
    """A callable running one pytorch_GAN_zoo-style iteration on copies of `networks` (G, D)."""
    g, d = (copy.deepcopy(n) for n in networks)
    avg_g = copy.deepcopy(g)
    if patched:
        for model in (g, d, avg_g):
            progan_fast.patch(model)
    for model in (g, d, avg_g):
        model.setNewAlpha(alpha)
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.99))
    data = torch.Generator().manual_seed(seed + 1)
    size = g.getOutputSize()
    reals = torch.rand(batch, 3, *size, generator=data) * 2 - 1
    reals = alpha * F.interpolate(F.avg_pool2d(reals, 2), scale_factor=2) + (1 - alpha) * reals
    latents = torch.randn(batch, g.dimLatent, generator=data)
    mix = torch.rand(batch, 1, 1, 1, generator=data)

    def step():
        d_opt.zero_grad(set_to_none=True)
        pred_real = d(reals)[:, 0]
        fake = g(latents).detach()
        d_loss = d(fake)[:, 0].sum() - pred_real.sum() + 0.001 * pred_real.square().sum()
        mixed = (mix * reals + (1 - mix) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(d(mixed)[:, 0].sum(), mixed, create_graph=True)
        d_loss = d_loss + 10 * (grad.view(batch, -1).norm(dim=1) - 1).square().sum()
        d_loss.backward()
        d_opt.step()

        g_opt.zero_grad(set_to_none=True)
        g_loss = -d(g(latents))[:, 0].sum()
        g_loss.backward()
        g_opt.step()
        with torch.no_grad():
            for p_avg, p in zip(avg_g.parameters(), g.parameters()):
                p_avg.mul_(0.999).add_(p, alpha=0.001)
        return d_loss.item(), g_loss.item()

    return step
