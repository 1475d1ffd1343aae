"""AUTOMATIC1111's samplers, as loops that ask for the model, plugged into diffusers'
pipelines through one scheduler class.

Each sampler is a Python generator written after k-diffusion's ``sample_*`` functions (the code
A1111 1.10 runs), A1111's Restart and LCM loops, its DDIM/PLMS timestep loops and its own
UniPC (uni_pc.py: bh1, time uniform, order 3, the UNet at continuous t): it yields the point
to evaluate at, ``(x, sigma)`` (or ``(x, timestep)`` for DDIM/PLMS/UniPC), and is sent back
``(x, denoised)`` (``(x, eps)`` for DDIM/PLMS/UniPC), where x is the sample the pipeline
passed (it equals the one yielded unless the pipeline blends it, as the 4-channel inpaint
pipeline does), until it returns the final latents.

:class:`A1111Scheduler` drives one such loop from a diffusers pipeline: ``set_timesteps`` runs
the loop once on a 1-element dummy to learn every point it will evaluate (the points depend on
the sigmas only), so ``timesteps`` holds one entry per model evaluation (``sigma_to_t(sigma)``,
continuous, as A1111 calls the UNet) and the pipeline's step callback (progress, cancel) runs
once per evaluation; ``scale_model_input`` multiplies by ``1 / sqrt(sigma^2 + 1)``;
``step`` turns the guided model output (eps, or v: k-diffusion's CompVisVDenoiser scalings)
into ``denoised`` and advances the loop.

Noise, as A1111 with RNG "CPU": the runner gives :meth:`A1111Scheduler.prepare` the per-image
generators after the initial noise was drawn from them; every ancestral / LCM / Restart noise
continues them, each image's generator drawing its own image's shape (A1111's ImageRNG.next).
The SDE samplers use k-diffusion's Brownian-tree noise seeded with the images' seeds (A1111's
"brownian_noise"). For img2img and inpaint the pipeline's own noise is replaced by the noise the
runner drew first from those generators, and the first sigma is A1111's: ``t_enc =
int(min(strength, 0.999) * steps)``, sigmas ``[steps - t_enc - 1:]``.
"""

from __future__ import annotations

import importlib.util
import itertools
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from sdstudio.engine.schedules import (
    LCMSigmas,
    ModelSigmas,
    a1111_sigmas,
    a1111_timesteps,
    alphas_cumprod_from_config,
    img2img_slice,
)

HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None

Tensor = torch.Tensor
# a point to evaluate the model at, and what comes back: (x, denoised) or (x, eps)
Loop = Generator[tuple[Tensor, Tensor], tuple[Tensor, Tensor], Tensor]
NoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LoopContext:
    noise: NoiseFn  # (sigma, sigma_next) -> noise of x's shape
    eta: float = 1.0
    s_noise: float = 1.0
    solver_type: str = "midpoint"
    alphas_cumprod: Tensor | None = None  # DDIM / PLMS


def _ancestral(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """(sigma_down, sigma_up) of an ancestral step (k-diffusion's get_ancestral_step)."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    up = torch.minimum(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2)
                                        / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - up ** 2) ** 0.5, up


def _to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    return (x - denoised) / sigma


# ---------------------------------------------------------------------- the k-samplers
def euler(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def euler_ancestral(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        down, up = _ancestral(sigmas[i], sigmas[i + 1], ctx.eta)
        x = x + _to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * ctx.s_noise * up
    return x


def heun(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2, denoised_2 = yield x + d * dt, sigmas[i + 1]
            d_2 = _to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


def dpm_2(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        d = _to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2, denoised_2 = yield x + d * (mid - sigmas[i]), mid
            x = x + _to_d(x_2, mid, denoised_2) * (sigmas[i + 1] - sigmas[i])
    return x


def dpm_2_ancestral(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        down, up = _ancestral(sigmas[i], sigmas[i + 1], ctx.eta)
        d = _to_d(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
        else:
            mid = sigmas[i].log().lerp(down.log(), 0.5).exp()
            x_2, denoised_2 = yield x + d * (mid - sigmas[i]), mid
            x = x + _to_d(x_2, mid, denoised_2) * (down - sigmas[i])
            x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * ctx.s_noise * up
    return x


def _lms_coefficient(order: int, t: Any, i: int, j: int) -> float:
    # t: the sigmas as a float32 numpy array, as k-diffusion integrates over them
    from scipy import integrate

    def basis(tau: float) -> float:
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod

    return float(integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0])


def lms(x: Tensor, sigmas: Tensor, ctx: LoopContext, order: int = 4) -> Loop:
    nodes = sigmas.detach().cpu().numpy()
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        ds.append(_to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        cur = min(i + 1, order)
        coeffs = [_lms_coefficient(cur, nodes, i, j) for j in range(cur)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=False))
    return x


def _t(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def dpmpp_2s_ancestral(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        down, up = _ancestral(sigmas[i], sigmas[i + 1], ctx.eta)
        if down == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h * 0.5).expm1() * denoised
            _, denoised_2 = yield x_2, _sigma(s)
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + ctx.noise(sigmas[i], sigmas[i + 1]) * ctx.s_noise * up
    return x


def dpmpp_sde(x: Tensor, sigmas: Tensor, ctx: LoopContext, r: float = 0.5) -> Loop:
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        sd, su = _ancestral(_sigma(t), _sigma(s), ctx.eta)
        s_ = _t(sd)
        x_2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + ctx.noise(_sigma(t), _sigma(s)) * ctx.s_noise * su
        _, denoised_2 = yield x_2, _sigma(s)
        sd, su = _ancestral(_sigma(t), _sigma(t_next), ctx.eta)
        t_next_ = _t(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + ctx.noise(_sigma(t), _sigma(t_next)) * ctx.s_noise * su
    return x


def dpmpp_2m(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    old: Tensor | None = None
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_d
        old = denoised
    return x


def _log_step(sigmas: Tensor, i: int) -> Tensor:
    """h = log(sigma_i / sigma_i+1), the step in -log sigma."""
    return -sigmas[i + 1].log() - -sigmas[i].log()


def _sde_noise(ctx: LoopContext, sigmas: Tensor, i: int, h: Tensor) -> Tensor:
    """The DPM-Solver++ SDE noise term of step i (eta = 1 in A1111)."""
    return ctx.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (
        -2 * h * ctx.eta).expm1().neg().sqrt() * ctx.s_noise


def dpmpp_2m_sde(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    old: Tensor | None = None
    h_last: Tensor | None = None
    h: Tensor | None = None
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _log_step(sigmas, i)
            eta_h = ctx.eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (
                -h - eta_h).expm1().neg() * denoised
            if old is not None and h_last is not None:
                r = h_last / h
                if ctx.solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (
                        denoised - old)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old)
            if ctx.eta:
                x = x + _sde_noise(ctx, sigmas, i, h)
        old, h_last = denoised, h
    return x


def dpmpp_3m_sde(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    d_1: Tensor | None = None
    d_2: Tensor | None = None
    h: Tensor | None = None
    h_1: Tensor | None = None
    h_2: Tensor | None = None
    for i in range(len(sigmas) - 1):
        x, denoised = yield x, sigmas[i]
        if sigmas[i + 1] != 0:
            h = _log_step(sigmas, i)
            h_eta = h * (ctx.eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None and h_1 is not None and d_1 is not None and d_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None and d_1 is not None:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * ((denoised - d_1) / (h_1 / h))
            if ctx.eta:
                x = x + _sde_noise(ctx, sigmas, i, h)
        else:
            x = denoised
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
    return x


def _karras_between(n: int, lo: float, hi: float) -> Tensor:
    ramp = torch.linspace(0, 1, n)
    lo_r, hi_r = lo ** (1 / 7.0), hi ** (1 / 7.0)
    return torch.cat([(hi_r + ramp * (lo_r - hi_r)) ** 7.0, torch.zeros(1)])


def restart(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    """A1111's restart_sampler (sd_samplers_extra.py) with its automatic restart list."""
    steps = sigmas.shape[0] - 1
    restarts: dict[float, tuple[int, int, float]] = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = _karras_between(steps - restart_steps * restart_times, sigmas[-2].item(),
                                 sigmas[0].item())
        restarts = {0.1: (restart_steps + 1, restart_times, 2.0)}
    by_index = {int(torch.argmin(abs(sigmas - key), dim=0)): value
                for key, value in restarts.items()}
    pairs: list[tuple[Tensor, Tensor]] = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            r_steps, r_times, r_max = by_index[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - r_max), dim=0))
            if max_idx < min_idx:
                again = _karras_between(r_steps, sigmas[min_idx].item(),
                                        sigmas[max_idx].item())[:-1]
                for _ in range(r_times):
                    pairs.extend(itertools.pairwise(again))
    last: Tensor | None = None
    for old_sigma, new_sigma in pairs:
        if last is None:
            last = old_sigma
        elif last < old_sigma:
            x = x + ctx.noise(last, old_sigma) * ctx.s_noise * (old_sigma ** 2 - last ** 2) ** 0.5
        x, denoised = yield x, old_sigma
        d = _to_d(x, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0:
            x = x + d * dt
        else:
            x_2, denoised_2 = yield x + d * dt, new_sigma
            x = x + (d + _to_d(x_2, new_sigma, denoised_2)) / 2 * dt
        last = new_sigma
    return x


def lcm(x: Tensor, sigmas: Tensor, ctx: LoopContext) -> Loop:
    for i in range(len(sigmas) - 1):
        _, denoised = yield x, sigmas[i]
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * ctx.noise(sigmas[i], sigmas[i + 1])
    return x


# ---------------------------------------------------------------- the timestep samplers
def _timestep_tables(ctx: LoopContext, timesteps: Tensor) -> tuple[Tensor, Tensor]:
    assert ctx.alphas_cumprod is not None
    ac = ctx.alphas_cumprod
    alphas = ac[timesteps]
    prev = ac[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    return alphas, prev


def _ddim_update(x: Tensor, e_t: Tensor, alphas: Tensor, prev: Tensor, index: int) -> Tensor:
    # the scalars as A1111 has them: python floats times ones of x's dtype
    a_t = torch.tensor(alphas[index].item(), dtype=x.dtype, device=x.device)
    a_prev = torch.tensor(prev[index].item(), dtype=x.dtype, device=x.device)
    sqrt_one_minus_at = torch.tensor((1 - alphas[index]).sqrt().item(), dtype=x.dtype,
                                     device=x.device)
    pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
    return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t


def ddim(x: Tensor, timesteps: Tensor, ctx: LoopContext) -> Loop:
    """A1111's ddim (sd_samplers_timesteps_impl.py) at eta 0: len(timesteps) - 1 steps, from
    the last timestep down to the second."""
    alphas, prev = _timestep_tables(ctx, timesteps)
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        x, e_t = yield x, timesteps[index]
        x = _ddim_update(x, e_t, alphas, prev, index)
    return x


def plms(x: Tensor, timesteps: Tensor, ctx: LoopContext) -> Loop:
    """A1111's plms: a pseudo improved Euler first step (two evaluations), then
    Adams-Bashforth of order 2, 3, 4."""
    alphas, prev = _timestep_tables(ctx, timesteps)
    old_eps: list[Tensor] = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        x, e_t = yield x, timesteps[index]
        if not old_eps:
            x_next = _ddim_update(x, e_t, alphas, prev, index)
            _, e_next = yield x_next, timesteps[max(index - 1, 0)]
            e_prime = (e_t + e_next) / 2
        elif len(old_eps) == 1:
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x = _ddim_update(x, e_prime, alphas, prev, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
    return x


class _VPSchedule:
    """A1111's NoiseScheduleVP("discrete"): log(alpha_t) interpolated linearly in t between
    the training steps, t_n = (n + 1) / N (float32, as uni_pc.py)."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        self.log_alpha = 0.5 * alphas_cumprod.to(torch.float32).log()
        self.total = len(self.log_alpha)
        self.t_array = torch.linspace(0.0, 1.0, self.total + 1)[1:]

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        t = t.reshape(-1).to(torch.float32)
        pos = torch.searchsorted(self.t_array, t).clamp(1, self.total - 1)
        t0, t1 = self.t_array[pos - 1], self.t_array[pos]
        y0, y1 = self.log_alpha[pos - 1], self.log_alpha[pos]
        return y0 + (t - t0) * (y1 - y0) / (t1 - t0)

    def alpha_sigma_lambda(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_alpha = self.log_mean_coeff(t).reshape(())
        sigma = (1.0 - (2.0 * log_alpha).exp()).sqrt()
        return log_alpha.exp(), sigma, log_alpha - sigma.log()

    def model_time(self, t: Tensor) -> Tensor:
        """The UNet's timestep for continuous t: (t - 1/N) * 1000."""
        return (t.reshape(()) - 1.0 / self.total) * 1000.0


def unipc_times(alphas_cumprod: Tensor, steps: int, t_enc: int | None = None) -> Tensor:
    """The continuous times A1111 1.10's UniPC runs (sd_samplers_timesteps_impl.unipc, skip
    type "time_uniform"): N = len(A1111's DDIM timesteps) steps from t = 1 (img2img: t_enc
    steps from timesteps[t_enc - 1] / 1000 + 1/1000) down to 1 / N_train."""
    timesteps = a1111_timesteps(steps)
    n = len(timesteps)
    t_start = 1.0
    if t_enc is not None:
        n = t_enc
        t_start = float(timesteps[n - 1]) / 1000 + 1 / 1000 if n else 1.0
    return torch.linspace(t_start, 1.0 / len(alphas_cumprod), n + 1)


def unipc(x: Tensor, times: Tensor, ctx: LoopContext, order: int = 3) -> Loop:
    """A1111's UniPC (uni_pc.py ``UniPC.sample``, multistep, variant bh1, data prediction,
    lower order final, no denoise to zero) on the continuous ``times``. Yields (x, the UNet's
    timestep) and is sent (x, eps). A1111 refuses fewer steps than the order; here the order
    drops to the steps."""
    assert ctx.alphas_cumprod is not None
    vp = _VPSchedule(ctx.alphas_cumprod)
    steps = len(times) - 1
    if steps < 1:
        return x
    order = min(order, steps)

    def data(x: Tensor, t: Tensor) -> Generator[tuple[Tensor, Tensor], tuple[Tensor, Tensor],
                                                  Tensor]:
        _, eps = yield x, vp.model_time(t)
        alpha, sigma, _ = vp.alpha_sigma_lambda(t)
        return (x - sigma * eps) / alpha

    models = [(yield from data(x, times[0]))]
    prev_t = [times[0]]
    for step in range(1, steps + 1):
        step_order = step if step < order else min(order, steps + 1 - step)
        t = times[step]
        alpha_t, sigma_t, lam_t = vp.alpha_sigma_lambda(t)
        _, sigma_0, lam_0 = vp.alpha_sigma_lambda(prev_t[-1])
        h = lam_t - lam_0
        m0 = models[-1]
        ratios = [(vp.alpha_sigma_lambda(prev_t[-(k + 1)])[2] - lam_0) / h
                  for k in range(1, step_order)]
        diffs = [(models[-(k + 1)] - m0) / r for k, r in zip(range(1, step_order), ratios,
                                                            strict=True)]
        hh = -h
        h_phi_1 = hh.expm1()
        rows, rhs = _bh1_system(torch.tensor([*[float(r) for r in ratios], 1.0]), hh,
                                step_order)
        base = sigma_t / sigma_0 * x - alpha_t * h_phi_1 * m0
        x_pred = base
        if diffs:
            rho_p = (torch.tensor([0.5]) if step_order == 2
                     else torch.linalg.solve(rows[:-1, :-1], rhs[:-1]))
            x_pred = base - alpha_t * hh * sum(rho * d for rho, d in
                                               zip(rho_p.tolist(), diffs, strict=True))
        if step == steps:  # no corrector (and no evaluation) on the last step
            x = x_pred
            break
        model_t = yield from data(x_pred, t)
        rho_c = torch.tensor([0.5]) if step_order == 1 else torch.linalg.solve(rows, rhs)
        correction = sum((rho * d for rho, d in zip(rho_c[:-1].tolist(), diffs, strict=True)),
                         torch.zeros_like(x))
        x = base - alpha_t * hh * (correction + float(rho_c[-1]) * (model_t - m0))
        models = [*models, model_t][-order:]
        prev_t = [*prev_t, t][-order:]
    return x


def _bh1_system(ratios: Tensor, hh: Tensor, order: int) -> tuple[Tensor, Tensor]:
    """UniPC's B(h) = h linear system: rows r_k^(i-1), right side phi_(i+1)(h) * i! / B(h)."""
    h_phi_k = hh.expm1() / hh - 1
    factorial = 1
    rows, rhs = [], []
    for i in range(1, order + 1):
        rows.append(ratios ** (i - 1))
        rhs.append(float(h_phi_k * factorial / hh))
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.tensor(rhs)


SamplerFn = Callable[[Tensor, Tensor, LoopContext], Loop]


# ------------------------------------------------------------------------------ noise
def _stack_draws(gens: Sequence[torch.Generator], like: Tensor) -> Tensor:
    shape = tuple(like.shape[1:])
    draws = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32)
             for g in gens]
    return torch.stack(draws).to(device=like.device, dtype=like.dtype)


def generator_noise(gens: Sequence[torch.Generator], like: Tensor) -> NoiseFn:
    """Each image's generator draws its own image's shape; stacked (A1111's ImageRNG.next)."""
    if len(gens) != like.shape[0]:
        raise ValueError(f"{len(gens)} generators for a batch of {like.shape[0]}")
    return lambda sigma, sigma_next: _stack_draws(gens, like)


def brownian_noise(seeds: Sequence[int], like: Tensor, sigmas: Tensor) -> NoiseFn:
    """k-diffusion's BrownianTreeNoiseSampler as A1111 seeds it: one torchsde BrownianTree per
    image, entropy = the image's seed, over [min positive sigma, max sigma] of the schedule."""
    if not HAS_TORCHSDE:
        raise RuntimeError("this sampler needs torchsde, which is not installed "
                           "(run installer/bootstrap.py to install SD Studio's dependencies)")
    import torchsde

    lo, hi = sigmas[sigmas > 0].min(), sigmas.max()
    t0, t1, sign = (lo, hi, 1) if lo < hi else (hi, lo, -1)
    w0 = torch.zeros_like(like)[0]
    trees = [torchsde.BrownianTree(t0, w0, t1, entropy=int(s)) for s in seeds]

    def draw(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        a, b, order = (a, b, 1) if a < b else (b, a, -1)
        with warnings.catch_warnings():  # torchsde: an end sigma off by float32 rounding
            warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
            w = torch.stack([tree(a, b) for tree in trees]) * (sign * order)
        return w / (b - a).abs().sqrt()

    return draw


def _zero_noise(sigma: Tensor, sigma_next: Tensor) -> Tensor:
    return torch.zeros(())


# ------------------------------------------------------------------------ the scheduler
@dataclass(frozen=True)
class LoopSpec:
    """How A1111 runs one sampler."""

    fn: SamplerFn
    kind: str = "sigma"  # "sigma" (k-diffusion), "lcm", "timestep" (DDIM / PLMS)
    discard_penultimate: bool = False
    noise: str = "none"  # "none", "generators", "brownian"
    solver_type: str = "midpoint"
    times: str = "ddim"  # timestep samplers: "ddim" (A1111's DDIM timesteps), "unipc"


class A1111Scheduler(SchedulerMixin, ConfigMixin):
    """One A1111 sampler with one schedule type, as a diffusers scheduler (see the module
    docstring). ``prepare`` before each pipeline call: generators, seeds, strength, noise."""

    order = 1
    config_name = "scheduler_config.json"

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(self, sampler: str = "Euler a", schedule_type: str = "Uniform",
                 num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                 beta_end: float = 0.012, beta_schedule: str = "scaled_linear",
                 trained_betas: Any = None, prediction_type: str = "epsilon",
                 sdxl: bool = False) -> None:
        from sdstudio.engine.samplers import loop_spec

        self.spec = loop_spec(sampler)
        alphas = alphas_cumprod_from_config(self.config)
        self.alphas_cumprod = alphas
        self.model_sigmas: ModelSigmas = (LCMSigmas(alphas) if self.spec.kind == "lcm"
                                          else ModelSigmas(alphas))
        self.timesteps = torch.zeros(0)
        self.run_sigmas = torch.zeros(0)  # the sigmas (or timesteps) of the last set_timesteps
        self._full_sigmas = self.run_sigmas
        self._points: list[Tensor] = []
        self._start_alpha: float | None = None
        self._pad = 0
        self._index = 0
        self._loop: Loop | None = None
        self._next_x: Tensor | None = None
        self.prepare()

    # ------------------------------------------------------------------ set-up per call
    def prepare(self, generators: Sequence[torch.Generator] = (), seeds: Sequence[int] = (),
                strength: float | None = None, noise: Tensor | None = None,
                repaint: Tensor | None = None,
                init_latents: Callable[[Tensor], Tensor] | None = None,
                t_enc: int | None = None) -> None:
        """What the next pipeline call needs: the per-image generators (after the initial
        noise was drawn), the image seeds (Brownian noise), the img2img strength (None for
        txt2img), the initial noise drawn for img2img/inpaint and, for inpainting with an
        ordinary (4-channel) model, the latent mask (1 = repaint) that A1111 blends with: the
        source's latents replace the prediction outside it at every evaluation (the input
        instead for DDIM, PLMS and UniPC, A1111's ``mask_before_denoising``) and the result
        at the end; the pipeline is then given a full mask so it blends nothing itself.
        ``init_latents``: applied to the encoded source before it is noised (the latent
        masked content modes, engine/masked_content.py). ``t_enc``: the image-to-image steps
        as A1111 counts them when the steps are given (its hires pass, ``setup_img2img_steps``
        with ``steps``): the last ``t_enc + 1`` sigmas' steps of the schedule (``t_enc`` for
        DDIM/PLMS/UniPC) instead of ``int(strength * steps)``; the pipeline is then called
        with strength 1 and keeps every timestep."""
        self._gens = list(generators)
        self._t_enc = t_enc
        self._init_latents = init_latents
        self._seeds = [int(s) for s in seeds]
        self._strength = strength
        self._noise = noise
        self._repaint = repaint
        self._init: Tensor | None = None

    def sigmas_for(self, steps: int, strength: float | None = None,
                   t_enc: int | None = None) -> Tensor:
        """The sigmas A1111 runs (timesteps for DDIM/PLMS), img2img slice included
        (``t_enc``: see :meth:`prepare`)."""
        if strength is not None and t_enc is None:
            t_enc = int(min(strength, 0.999) * steps)
        if self.spec.times == "unipc":
            return unipc_times(self.alphas_cumprod, steps, t_enc)
        if self.spec.kind == "timestep":
            timesteps = a1111_timesteps(steps + (1 if self.spec.discard_penultimate else 0))
            return timesteps if t_enc is None else timesteps[:t_enc]
        sigmas = a1111_sigmas(self.config.schedule_type, steps, self.model_sigmas,
                              discard_penultimate=self.spec.discard_penultimate,
                              sdxl=bool(self.config.sdxl))
        return sigmas if t_enc is None else img2img_slice(sigmas, steps, t_enc)

    def plan(self, steps: int, strength: float | None = None,
             t_enc: int | None = None) -> list[Tensor]:
        """Every point (sigma or timestep) the sampler evaluates the model at, in order."""
        schedule = self.sigmas_for(steps, strength, t_enc)
        loop = self.spec.fn(torch.zeros(1, 1, 1, 1), schedule, self._context(_zero_noise))
        points: list[Tensor] = []
        try:
            x, point = next(loop)
            while True:
                points.append(point)
                x, point = loop.send((x, torch.zeros_like(x)))
        except StopIteration:
            pass
        return points

    def _context(self, noise: NoiseFn) -> LoopContext:
        return LoopContext(noise=noise, solver_type=self.spec.solver_type,
                           alphas_cumprod=self.alphas_cumprod)

    def set_timesteps(self, num_inference_steps: int, device: Any = None,
                      **kwargs: Any) -> None:
        steps = int(num_inference_steps)
        strength, fixed = self._strength, self._t_enc
        self.run_sigmas = self.sigmas_for(steps, strength, fixed)
        self._full_sigmas = self.sigmas_for(steps) if strength is not None else self.run_sigmas
        self._points = self.plan(steps, strength, fixed)
        if not self._points:
            raise ValueError(f"{self.config.sampler} at {steps} steps and strength {strength} "
                             "evaluates the model no time")
        if self.spec.kind == "timestep" and strength is not None:
            full = a1111_timesteps(steps + (1 if self.spec.discard_penultimate else 0))
            t_enc = int(min(strength, 0.999) * steps) if fixed is None else fixed
            self._start_alpha = float(self.alphas_cumprod[full[t_enc]])
        else:
            self._start_alpha = None
        unet_t = [self._unet_timestep(p) for p in self._points]
        # diffusers' img2img/inpaint pipelines drop the first t_start * order timesteps,
        # t_start = steps - int(steps * strength): pad so that what is left is A1111's run
        self._pad = 0 if strength is None or fixed is not None else (
            steps - min(int(steps * strength), steps))
        values = [unet_t[0]] * self._pad + unet_t
        self.timesteps = torch.tensor(values, dtype=torch.float32, device=device)
        self._index = 0
        self._loop = None

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._index = max(0, int(begin_index) - self._pad)

    def _unet_timestep(self, point: Tensor) -> float:
        if self.spec.kind == "timestep":
            return float(point)
        return float(self.model_sigmas.sigma_to_t(point.reshape(1))[0])

    @property
    def init_noise_sigma(self) -> float:
        if self.spec.kind == "timestep":
            return 1.0
        return float(self.run_sigmas[0]) if len(self.run_sigmas) else 1.0

    # --------------------------------------------------------------------- per evaluation
    def _point(self) -> Tensor:
        return self._points[min(self._index, len(self._points) - 1)]

    def _blend(self, value: Tensor, keep: Tensor) -> Tensor:
        """``value`` where the mask repaints, ``keep`` (the source's latents) elsewhere."""
        assert self._repaint is not None
        # moved once to the latents' device and dtype; later evaluations reuse it
        repaint = self._repaint = self._repaint.to(device=value.device, dtype=value.dtype)
        if repaint.shape[0] != value.shape[0]:  # the guidance batch: uncond + cond
            repaint = repaint.repeat(value.shape[0] // repaint.shape[0], 1, 1, 1)
            keep = keep.repeat(value.shape[0] // keep.shape[0], 1, 1, 1)
        return keep.to(value.dtype) * (1 - repaint) + repaint * value

    def _blending(self) -> bool:
        return self._repaint is not None and self._init is not None

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        if self.spec.kind == "timestep":
            if self._blending():  # A1111's mask_before_denoising (timestep samplers)
                assert self._init is not None
                return self._blend(sample, self._init)
            return sample
        sigma = self._point()
        return sample * (1 / (sigma ** 2 + 1) ** 0.5)

    def _model_value(self, output: Tensor, sample: Tensor, point: Tensor) -> Tensor:
        """denoised (k-samplers, LCM) or eps (DDIM, PLMS) from the guided model output."""
        v_pred = self.config.prediction_type == "v_prediction"
        if self.spec.kind == "timestep":
            if not v_pred:
                return output
            a = self.alphas_cumprod[int(point)]
            return a.sqrt().item() * output + (1 - a).sqrt().item() * sample
        sigma = point
        if self.config.prediction_type == "sample":
            denoised = output
        elif v_pred:
            c_skip = 1 / (sigma ** 2 + 1)
            c_out = -sigma / (sigma ** 2 + 1) ** 0.5
            denoised = output * c_out + sample * c_skip
        else:
            denoised = sample + output * (-sigma)
        if self.spec.kind == "lcm":
            scaled_t = self.model_sigmas.sigma_to_t(sigma) * 10.0
            c_skip = 0.25 / (scaled_t ** 2 + 0.25)
            c_out = scaled_t / (scaled_t ** 2 + 0.25) ** 0.5
            denoised = c_out * denoised + c_skip * sample
        return denoised

    def _start(self, sample: Tensor) -> Loop:
        noise: NoiseFn = _zero_noise
        if self.spec.noise == "generators":
            noise = generator_noise(self._gens, sample)
        elif self.spec.noise == "brownian":  # over the whole schedule, img2img too (A1111)
            noise = brownian_noise(self._seeds, sample, self._full_sigmas)
        loop = self.spec.fn(sample, self.run_sigmas, self._context(noise))
        next(loop)
        return loop

    def step(self, model_output: Tensor, timestep: Any, sample: Tensor,
             generator: torch.Generator | list[torch.Generator] | None = None,
             return_dict: bool = True, **kwargs: Any) -> SchedulerOutput | tuple[Tensor]:
        """One model evaluation. ``generator``: the pipeline's, used only when ``prepare``
        gave none (a pipeline driven without the engine)."""
        if self._loop is None:
            if not self._gens and generator is not None:
                gens = generator if isinstance(generator, list) else [generator]
                if len(gens) == sample.shape[0]:
                    self._gens = list(gens)
                    self._seeds = self._seeds or [int(g.initial_seed()) for g in gens]
            self._loop = self._start(sample)
        value = self._model_value(model_output, sample, self._point())
        if self._blending() and self.spec.kind != "timestep":  # A1111's CFG denoiser
            assert self._init is not None
            value = self._blend(value, self._init)
        self._index += 1
        try:
            x, _ = self._loop.send((sample, value.to(sample.dtype)))
        except StopIteration as done:
            x = done.value
            self._loop = None
            if self._blending():  # A1111: samples * nmask + init_latent * mask
                assert self._init is not None
                x = self._blend(x, self._init)
        x = x.to(sample.dtype)
        return SchedulerOutput(prev_sample=x) if return_dict else (x,)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """img2img / inpaint: ``init + noise * sigma`` at the evaluation point ``timesteps``
        names (DDIM/PLMS: A1111's ``sqrt(a) * init + sqrt(1 - a) * noise``); the noise is the
        runner's (drawn first from the image generators) when it gave one."""
        if self._noise is not None and self._noise.shape == noise.shape:
            noise = self._noise.to(device=original_samples.device, dtype=original_samples.dtype)
        if self._init_latents is not None:
            original_samples = self._init_latents(original_samples)
        if self._repaint is not None and self._init is None:
            self._init = original_samples.detach()  # the source's latents, for the blending
        t = float(torch.as_tensor(timesteps).reshape(-1)[0])
        index = self._find(t)
        if self.spec.kind == "timestep":
            alpha = (self._start_alpha if index == 0 and self._start_alpha is not None
                     else float(self.alphas_cumprod[int(self._points[index])]))
            return original_samples * alpha ** 0.5 + noise * (1 - alpha) ** 0.5
        sigma = self._points[index].to(original_samples.device)
        return original_samples + noise * sigma.to(original_samples.dtype)

    def _find(self, t: float) -> int:
        for i, value in enumerate(self.timesteps[self._pad:].tolist()):
            if value == t:
                return i
        return len(self._points) - 1

    def __len__(self) -> int:
        return int(self.config.num_train_timesteps)
