"""Sigma schedules as AUTOMATIC1111 1.10 computes them (modules/sd_schedulers.py and
KDiffusionSampler.get_sigmas), from the model's own noise table.

:class:`ModelSigmas` is k-diffusion's ``DiscreteSchedule`` for a model: the 1000 training sigmas
``sqrt((1 - alphas_cumprod) / alphas_cumprod)`` (alphas_cumprod made in float64 from the
model's beta settings, then kept as float32, as the LDM/SGM model classes A1111 loads keep them),
``sigma_to_t`` (log-sigma interpolation between the two nearest training sigmas) and
``t_to_sigma``. :class:`LCMSigmas` is A1111's ``LCMCompVisDenoiser`` table: 50 of those
sigmas, every 20th, with quantised timesteps.

:func:`a1111_sigmas` is ``get_sigmas``: the schedule type's function at ``steps`` (one more when
the sampler discards the penultimate sigma, which it then drops). The defaults A1111 ships are
used: rho 7 (Karras) and 1 (Polyexponential), Beta alpha = beta = 0.6, the model's own
sigma_min/sigma_max, no "old Karras sigmas".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

BETA_ALPHA = 0.6  # A1111's beta_dist_alpha / beta_dist_beta defaults
BETA_BETA = 0.6

# Align Your Steps (NVIDIA's published 10-step sigmas; A1111 uses the SD 1.5 list for every
# model that is not SDXL)
_AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
_AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def alphas_cumprod_from_config(config: Mapping[str, Any]) -> torch.Tensor:
    """The model's alphas_cumprod (float32) from a diffusers scheduler config."""
    n = int(config.get("num_train_timesteps", 1000) or 1000)
    trained = config.get("trained_betas")
    schedule = str(config.get("beta_schedule", "scaled_linear"))
    start = float(config.get("beta_start", 0.00085))
    end = float(config.get("beta_end", 0.012))
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64)
    elif schedule == "scaled_linear":  # LDM's "linear": linear in sqrt(beta)
        betas = np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float64) ** 2
    elif schedule == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    elif schedule == "squaredcos_cap_v2":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999)
                          for i in range(n)], dtype=np.float64)
    else:
        raise ValueError(f"beta schedule {schedule!r} is not supported")
    return torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)


class ModelSigmas:
    """A model's discrete sigmas and k-diffusion's t <-> sigma mapping (float32)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod.to(torch.float32)
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0].item())

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1].item())

    def get_sigmas(self, n: int) -> torch.Tensor:
        """Uniform: ``n`` sigmas evenly spaced in t from the last to the first, then 0."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return _append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(self.log_sigmas) - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()


class LCMSigmas(ModelSigmas):
    """A1111's LCM table: the 50 sigmas at timesteps 19, 39, ..., 999; sigma_to_t gives the
    nearest of those timesteps (an integer), t_to_sigma interpolates between them."""

    ORIGINAL_STEPS = 50

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        total = len(alphas_cumprod)
        self.skip = total // self.ORIGINAL_STEPS
        picked = torch.zeros(self.ORIGINAL_STEPS, dtype=torch.float32)
        for x in range(self.ORIGINAL_STEPS):
            picked[self.ORIGINAL_STEPS - 1 - x] = alphas_cumprod[total - 1 - x * self.skip]
        super().__init__(picked)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start = self.sigma_to_t(self.sigmas[-1])
        end = self.sigma_to_t(self.sigmas[0])
        return _append_zero(self.t_to_sigma(torch.linspace(float(start), float(end), n)))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip + (self.skip - 1)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = torch.clamp(((t - (self.skip - 1)) / self.skip).float(), min=0,
                            max=len(self.sigmas) - 1)
        return super().t_to_sigma(index)


def _append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


# ------------------------------------------------------------------- the schedule types
# Each: (n, sigma_min, sigma_max, model, sdxl) -> sigmas (float32, usually ending in 0)
ScheduleFn = Callable[[int, float, float, ModelSigmas, bool], torch.Tensor]


def _uniform(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    return model.get_sigmas(n)


def _karras(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool,
            rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    lo_r, hi_r = lo ** (1 / rho), hi ** (1 / rho)
    return _append_zero((hi_r + ramp * (lo_r - hi_r)) ** rho)


def _exponential(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(hi), math.log(lo), n).exp())


def _polyexponential(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool,
                     rho: float = 1.0) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(torch.exp(ramp * (math.log(hi) - math.log(lo)) + math.log(lo)))


def _t_range(model: ModelSigmas, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    return model.sigma_to_t(torch.tensor(hi)), model.sigma_to_t(torch.tensor(lo))


def _sgm_uniform(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    start, end = _t_range(model, lo, hi)
    values = [model.t_to_sigma(t) for t in torch.linspace(float(start), float(end), n + 1)[:-1]]
    return torch.tensor([float(v) for v in values] + [0.0], dtype=torch.float32)


def _normal(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    start, end = _t_range(model, lo, hi)
    values = [model.t_to_sigma(t) for t in torch.linspace(float(start), float(end), n)]
    return torch.tensor([float(v) for v in values] + [0.0], dtype=torch.float32)


def _kl_optimal(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    # A1111's kl_optimal ends at sigma_min, not at 0 (no zero is appended)
    a_min, a_max = torch.arctan(torch.tensor(lo)), torch.arctan(torch.tensor(hi))
    i = torch.arange(n + 1)
    return torch.tan(i / n * a_min + (1.0 - i / n) * a_max)


def _align_your_steps(n: int, lo: float, hi: float, model: ModelSigmas,
                      sdxl: bool) -> torch.Tensor:
    base = list(_AYS_SDXL if sdxl else _AYS_SD15)
    if n != len(base):
        xs = np.linspace(0, 1, len(base))
        ys = np.log(np.asarray(base[::-1]))
        picked = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]
        values = [*picked.tolist(), 0.0]
    else:
        values = [*base, 0.0]
    return torch.tensor(values, dtype=torch.float32)


def _simple(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    stride = len(model.sigmas) / n
    values = [float(model.sigmas[-(1 + int(x * stride))]) for x in range(n)]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def _ddim_uniform(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    stride = max(len(model.sigmas) // n, 1)
    values = [float(model.sigmas[x]) for x in range(1, len(model.sigmas), stride)]
    return torch.tensor([*values[::-1], 0.0], dtype=torch.float32)


def _beta(n: int, lo: float, hi: float, model: ModelSigmas, sdxl: bool) -> torch.Tensor:
    from scipy import stats

    points = 1 - np.linspace(0, 1, n)
    values = [lo + float(stats.beta.ppf(p, BETA_ALPHA, BETA_BETA)) * (hi - lo) for p in points]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


SCHEDULES: dict[str, ScheduleFn] = {
    "Uniform": _uniform,
    "Karras": _karras,
    "Exponential": _exponential,
    "Polyexponential": _polyexponential,
    "SGM Uniform": _sgm_uniform,
    "KL Optimal": _kl_optimal,
    "Align Your Steps": _align_your_steps,
    "Simple": _simple,
    "Normal": _normal,
    "DDIM": _ddim_uniform,
    "Beta": _beta,
}


def a1111_sigmas(schedule: str, steps: int, model: ModelSigmas, *, discard_penultimate: bool,
                 sdxl: bool) -> torch.Tensor:
    """KDiffusionSampler.get_sigmas for a resolved schedule type (not "Automatic")."""
    try:
        fn = SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown schedule type {schedule!r}") from None
    n = steps + 1 if discard_penultimate else steps
    sigmas = fn(n, model.sigma_min, model.sigma_max, model, sdxl).to(torch.float32)
    if discard_penultimate:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def img2img_slice(sigmas: torch.Tensor, steps: int, t_enc: int) -> torch.Tensor:
    """A1111's img2img sigmas: ``sigmas[steps - t_enc - 1:]`` (t_enc + 1 steps), with
    ``t_enc = int(min(strength, 0.999) * steps)`` (or, with the steps given, as the hires
    pass does, ``steps - 1`` of a longer schedule)."""
    return sigmas[steps - t_enc - 1:]


def a1111_timesteps(steps: int) -> torch.Tensor:
    """A1111's DDIM/PLMS timesteps: ``range(0, 1000, 1000 // steps) + 1``, clipped to 999."""
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
