"""One full WGAN-GP training iteration, for the train-step, train-step-scale and data-loader benchmarks.

The iteration (TF official losses and order; the same code for every case, only the networks differ):
  D step: G forward on fresh latents (no grad), D on the faded reals, D on the fakes, D on the per-sample mix and
          its input gradient with create_graph (double backward), penalty (lambda 10, target 1) + drift 0.001,
          backward, Adam step;
  EMA:    Gs <- lerp(Gs, G, 1 - 0.999) over the parameters;
  G step: G forward on fresh latents, D forward (D's parameters frozen), backward, Adam step.
Adam(lr 1e-3, betas (0, 0.99), eps 1e-8). The weights and Adam state advance with every call, as in training.

A `Case` says which networks run and how: progan_fast.models (on a forced backend or the automatic choice) or the
unfused plain-PyTorch baseline (benchmarks/baseline.py), the memory format, G under torch.compile, bf16 autocast,
and the malloc setting (glibc's thresholds raised, as the trainer runs, or glibc's defaults).
"""
import copy
import dataclasses
import math
import contextlib

import torch

import progan_fast
from progan_fast import models, ops
from progan_fast.ops import winograd

from . import baseline, common

# Train-step config: 128 feature maps at every resolution up to 128x128, minibatch 16, float32.
CONFIG = {"fmap_base": 16384, "fmap_max": 128, "latent_size": 128, "minibatch": 16}
# Smoke mode (--benchmark-disable) only checks that every case runs: far fewer FLOPs, same code paths.
SMOKE_CONFIG = {"fmap_base": 256, "fmap_max": 16, "latent_size": 16, "minibatch": 8}
GP_LAMBDA, GP_TARGET, DRIFT = 10.0, 1.0, 0.001
LR, BETAS, EPS = 1e-3, (0.0, 0.99), 1e-8
EMA_BETA = 0.999


@dataclasses.dataclass(frozen=True)
class Case:
    models: str                   # "baseline" or "progan_fast"
    backend: str | None = None    # progan_fast backend to force (None: automatic); ignored by the baseline
    layout: str = "nchw"          # "nchw" or "channels_last"
    compile_g: bool = False       # G under torch.compile (D cannot be: aot_autograd has no double backward)
    amp: str = "none"             # "none" or "bf16" (torch.autocast)
    malloc: str = "tuned"         # "tuned" (progan_fast.tune_allocator) or "default" (glibc's defaults)
    conv: str = "direct"          # progan_fast's 3x3 convs: "direct" (torch's) or "winograd" (ops.winograd)

    def __post_init__(self):
        if self.models not in ("baseline", "progan_fast"):
            raise ValueError(f"models must be 'baseline' or 'progan_fast'; got {self.models!r}")
        if self.layout not in common.LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(common.LAYOUTS)}; got {self.layout!r}")
        if self.amp not in ("none", "bf16"):
            raise ValueError(f"amp must be 'none' or 'bf16'; got {self.amp!r}")
        if self.malloc not in ("tuned", "default"):
            raise ValueError(f"malloc must be 'tuned' or 'default'; got {self.malloc!r}")
        if self.conv not in winograd.ALGORITHMS or (self.conv != "direct" and self.models != "progan_fast"):
            raise ValueError(f"conv must be one of {winograd.ALGORITHMS} (not direct only for progan_fast); "
                             f"got {self.conv!r}")

    @property
    def name(self):
        parts = ["baseline" if self.models == "baseline" else f"progan_fast[{self.backend or 'auto'}]"]
        if self.compile_g:
            parts.append("compile(G)")
        if self.layout != "nchw":
            parts.append(self.layout)
        if self.amp != "none":
            parts.append(self.amp)
        if self.malloc != "tuned":
            parts.append("default-malloc")
        if self.conv != "direct":
            parts.append(self.conv)
        return " ".join(parts)

    @property
    def precision(self):
        return "float32" if self.amp == "none" else self.amp


class TrainStep:
    """Callable: one training iteration of `case` at 2^res_log2 while fading (alpha), returning (d_loss, g_loss)."""

    def __init__(self, case, res_log2, alpha=0.5, config=CONFIG, device="cpu", seed=0, compile_mode="default"):
        self.case, self.res_log2, self.alpha, self.config = case, res_log2, alpha, config
        self.device = device = torch.device(device)
        resolution = 2 ** res_log2
        torch.manual_seed(seed)  # parameter init
        kwargs = dict(fmap_base=config["fmap_base"], fmap_max=config["fmap_max"])
        if case.models == "progan_fast":
            channels_last = case.layout == "channels_last"
            G = models.Generator(resolution, latent_size=config["latent_size"], channels_last=channels_last, **kwargs)
            D = models.Discriminator(resolution, channels_last=channels_last, **kwargs)
            self.fade_reals = ops.fade_reals
        else:
            G = baseline.Generator(resolution, latent_size=config["latent_size"], **kwargs)
            D = baseline.Discriminator(resolution, **kwargs)
            self.fade_reals = baseline.fade_reals
        self.memory_format = common.LAYOUTS[case.layout]
        self.G, self.D = G.to(device), D.to(device)
        if case.models == "baseline" and case.layout == "channels_last":
            # the usual PyTorch recipe: weights and inputs in channels_last, the convs keep it
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.Gs = copy.deepcopy(self.G).requires_grad_(False)
        self.G_run = torch.compile(self.G, dynamic=False, mode=compile_mode) if case.compile_g else self.G
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=LR, betas=BETAS, eps=EPS)
        self.d_opt = torch.optim.Adam(self.D.parameters(), lr=LR, betas=BETAS, eps=EPS)
        self.gen = torch.Generator(device).manual_seed(seed)
        self.last_losses = None
        n = config["minibatch"]
        cpu_gen = torch.Generator().manual_seed(seed)
        self.reals = (torch.rand(n, 3, resolution, resolution, generator=cpu_gen) * 2 - 1).to(device).contiguous(
            memory_format=self.memory_format)

    def parameters(self):
        return list(self.G.parameters()) + list(self.D.parameters()) + list(self.Gs.parameters())

    def _latents(self):
        return torch.randn(self.config["minibatch"], self.config["latent_size"], generator=self.gen,
                           device=self.device)

    def _context(self):
        stack = contextlib.ExitStack()
        if self.case.models == "progan_fast":
            stack.enter_context(progan_fast.use_backend(self.case.backend))
            stack.enter_context(winograd.use_conv_algorithm(self.case.conv))
        if self.case.amp == "bf16":
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        return stack

    def __call__(self):
        if self.device.type == "cpu":
            common.set_glibc_thresholds(self.case.malloc == "tuned")
        G, D, r, alpha, n = self.G_run, self.D, self.res_log2, self.alpha, self.config["minibatch"]
        with self._context():
            self.d_opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                fakes = G(self._latents(), r, alpha)
            x = self.fade_reals(self.reals, alpha)
            real_scores = D(x, r, alpha).float()
            fake_scores = D(fakes, r, alpha).float()
            mix = torch.rand(n, 1, 1, 1, generator=self.gen, device=self.device)
            mixed = torch.lerp(x, fakes.to(x.dtype), mix.to(x.dtype)).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(D(mixed, r, alpha).float().sum(), mixed, create_graph=True)
            penalty = (grad.float().flatten(1).norm(dim=1) - GP_TARGET).square() * (GP_LAMBDA / GP_TARGET ** 2)
            d_loss = ((fake_scores - real_scores).squeeze(1) + penalty + DRIFT * real_scores.squeeze(1).square()).mean()
            d_loss.backward()
            self.d_opt.step()

            with torch.no_grad():
                torch._foreach_lerp_(list(self.Gs.parameters()), list(self.G.parameters()), 1.0 - EMA_BETA)

            D.requires_grad_(False)
            try:
                self.g_opt.zero_grad(set_to_none=True)
                g_loss = -D(G(self._latents(), r, alpha), r, alpha).float().mean()
                g_loss.backward()
                self.g_opt.step()
            finally:
                D.requires_grad_(True)
        self.last_losses = (d_loss.detach(), g_loss.detach())
        return self.last_losses

    def saved_bytes(self):
        """Bytes saved for backward during one iteration (activations; parameters excluded)."""
        return common.saved_tensor_bytes(self, exclude=self.parameters())

    def peak_rss(self):
        """(peak resident bytes during one iteration, resident bytes before it)."""
        return common.peak_rss(self)


def build_step(res_log2, alpha, impl, channels_last, seed=0, config=CONFIG):
    """progan_fast models on backend `impl` (data-loader benchmark's reference iteration)."""
    case = Case("progan_fast", backend=impl, layout="channels_last" if channels_last else "nchw")
    return TrainStep(case, res_log2, alpha, config=config, seed=seed)


def res_log2_of(resolution):
    return int(math.log2(resolution))
