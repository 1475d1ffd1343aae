"""SD Studio's samplers against k-diffusion (what AUTOMATIC1111 1.10 runs) on the tiny models.

The reference side is built here, not from SD Studio's code: the model's alphas_cumprod as the
LDM model class makes it (float64 torch linspace of sqrt(beta), cumprod, float32), k-diffusion's
CompVisDenoiser / CompVisVDenoiser around the same UNet, A1111's CFG denoiser (model called on
cond and uncond, ``uncond + (cond - uncond) * scale`` on the denoised), A1111's sigmas per
schedule type (k-diffusion's get_sigmas_* and A1111's formulas from modules/sd_schedulers.py),
k-diffusion's ``sample_*`` functions, the initial and ancestral noise drawn from CPU generators
seeded with each image's seed (A1111's ImageRNG, RNG "CPU") and k-diffusion's
BrownianTreeNoiseSampler seeded with the images' seeds for the SDE samplers.

The text conditioning is taken from SD Studio's own run (a hook on the UNet's first call), so
the comparison is of sampling only. Tolerance: float32 rounding. SD Studio applies CFG to the
model output (eps / v) and converts to denoised once, A1111 converts each and then combines:
the same linear map in another order. Measured over the 190 runs here (2026-12-02, CPU):
max |diff| / max |reference| = 2.2e-5 at most, median 7.6e-7 (max |diff| 1.05e-3 on latents
of magnitude 48; the tiny random UNets give large latents). TOL = 1e-4 of the reference's
magnitude; a Karras rho of 7.01 instead of 7 already fails it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.core.request import SAMPLER_NAMES, SCHEDULE_TYPES, GenerationRequest
from sdstudio.core.sampler_names import (
    AUTOMATIC_SCHEDULE,
    TIMESTEP_SAMPLERS,
    model_evaluations,
)
from sdstudio.engine import runner as runner_module
from sdstudio.engine.ksampling import A1111Scheduler
from tests.engine import _kdiffusion

TOL = 1e-4
# k-diffusion's Brownian tree warns when an end sigma is off by float32 rounding (A1111 too)
pytestmark = pytest.mark.filterwarnings("ignore:Should have t:UserWarning")
STEPS = 4
FUNCS = {
    "Euler a": "sample_euler_ancestral", "Euler": "sample_euler", "LMS": "sample_lms",
    "Heun": "sample_heun", "DPM2": "sample_dpm_2", "DPM2 a": "sample_dpm_2_ancestral",
    "DPM++ 2S a": "sample_dpmpp_2s_ancestral", "DPM++ 2M": "sample_dpmpp_2m",
    "DPM++ SDE": "sample_dpmpp_sde", "DPM++ 2M SDE": "sample_dpmpp_2m_sde",
    "DPM++ 2M SDE Heun": "sample_dpmpp_2m_sde", "DPM++ 3M SDE": "sample_dpmpp_3m_sde",
}
ANCESTRAL = {"Euler a", "DPM2 a", "DPM++ 2S a"}
BROWNIAN = {"DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}
DISCARD = {"DPM2", "DPM2 a", "DPM++ 3M SDE"}  # A1111's discard_next_to_last_sigma
K_SAMPLERS = [*FUNCS, "Restart", "LCM"]
SIGMA_SCHEDULES = [s for s in SCHEDULE_TYPES if s != "Automatic"]


@pytest.fixture(scope="module")
def kd() -> Any:
    return _kdiffusion.load()


# ------------------------------------------------------------------ the reference model
def ldm_alphas_cumprod(config: dict[str, Any]) -> torch.Tensor:
    """As ldm's make_beta_schedule("linear") + register_schedule make it."""
    assert config["beta_schedule"] == "scaled_linear"
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5,
                           config["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)


class CompVisModel:
    """The CompVis model interface k-diffusion's wrappers call (alphas_cumprod, apply_model)
    around a diffusers UNet, with the conditioning SD Studio used."""

    def __init__(self, unet: Any, alphas_cumprod: torch.Tensor,
                 added: dict[str, torch.Tensor] | None) -> None:
        self.unet, self.alphas_cumprod, self.added = unet, alphas_cumprod, added

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        kwargs = {"added_cond_kwargs": self.added} if self.added else {}
        with torch.no_grad():
            return self.unet(x, t, encoder_hidden_states=cond, **kwargs).sample


def cfg_denoiser(denoiser: Any, cond: torch.Tensor, uncond: torch.Tensor,
                 scale: float) -> Callable[..., torch.Tensor]:
    """A1111's CFGDenoiser for one prompt per image: [cond, uncond] in one batch."""
    def model(x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                       cond=torch.cat([cond, uncond]))
        c, u = out.chunk(2)
        return u + (c - u) * scale

    return model


# ------------------------------------------------------------- A1111's sigmas, written here
def reference_sigmas(kd: Any, den: Any, schedule: str, n: int, sdxl: bool) -> torch.Tensor:
    lo, hi = den.sigmas[0].item(), den.sigmas[-1].item()
    s = kd.sampling
    if schedule == "Uniform":
        return den.get_sigmas(n)
    if schedule == "Karras":
        return s.get_sigmas_karras(n, lo, hi, rho=7.0)
    if schedule == "Exponential":
        return s.get_sigmas_exponential(n, lo, hi)
    if schedule == "Polyexponential":
        return s.get_sigmas_polyexponential(n, lo, hi, rho=1.0)
    if schedule in ("SGM Uniform", "Normal"):
        start, end = den.sigma_to_t(torch.tensor(hi)), den.sigma_to_t(torch.tensor(lo))
        ts = (torch.linspace(start, end, n + 1)[:-1] if schedule == "SGM Uniform"
              else torch.linspace(start, end, n))
        return torch.FloatTensor([den.t_to_sigma(t) for t in ts] + [0.0])
    if schedule == "KL Optimal":
        i = torch.arange(n + 1)
        a_lo, a_hi = math.atan(lo), math.atan(hi)
        return torch.tan(i / n * a_lo + (1 - i / n) * a_hi).float()
    if schedule == "Simple":
        ss = len(den.sigmas) / n
        return torch.FloatTensor([float(den.sigmas[-(1 + int(x * ss))]) for x in range(n)]
                                 + [0.0])
    if schedule == "DDIM":
        ss = max(len(den.sigmas) // n, 1)
        picked = [float(den.sigmas[x]) for x in range(1, len(den.sigmas), ss)]
        return torch.FloatTensor([*picked[::-1], 0.0])
    if schedule == "Beta":
        from scipy import stats

        ts = [stats.beta.ppf(x, 0.6, 0.6) for x in 1 - np.linspace(0, 1, n)]
        return torch.FloatTensor([lo + x * (hi - lo) for x in ts] + [0.0])
    if schedule == "Align Your Steps":
        base = ([14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
                if sdxl else
                [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029])
        if n == len(base):
            return torch.FloatTensor([*base, 0.0])
        ys = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(base)), np.log(base[::-1]))
        return torch.FloatTensor(np.append(np.exp(ys)[::-1].copy(), [0.0]))
    raise AssertionError(schedule)


def a1111_get_sigmas(kd: Any, den: Any, sampler: str, schedule: str, steps: int,
                     sdxl: bool) -> torch.Tensor:
    """KDiffusionSampler.get_sigmas: Automatic = the sampler's own schedule, or Uniform."""
    if schedule == "Automatic":
        schedule = AUTOMATIC_SCHEDULE.get(sampler, "Uniform")
    discard = sampler in DISCARD
    sigmas = reference_sigmas(kd, den, schedule, steps + (1 if discard else 0), sdxl)
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas


class LCMDenoiser:
    """A1111's LCMCompVisDenoiser, written on k-diffusion's DiscreteEpsDDPMDenoiser."""

    @staticmethod
    def make(kd: Any, model: CompVisModel) -> Any:
        base = kd.external.DiscreteEpsDDPMDenoiser

        class Denoiser(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                self.skip = 20
                picked = torch.zeros(50)
                for x in range(50):
                    picked[49 - x] = model.alphas_cumprod[999 - x * 20]
                super().__init__(model, picked, quantize=None)

            def get_sigmas(self, n: int) -> torch.Tensor:
                t = torch.linspace(self.sigma_to_t(self.sigma_max),
                                   self.sigma_to_t(self.sigma_min), n)
                return kd.sampling.append_zero(self.t_to_sigma(t))

            def sigma_to_t(self, sigma: torch.Tensor, quantize: Any = None) -> torch.Tensor:
                dists = sigma.log() - self.log_sigmas[:, None]
                return dists.abs().argmin(dim=0).view(sigma.shape) * 20 + 19

            def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
                return super().t_to_sigma(torch.clamp(((t - 19) / 20).float(), 0, 49))

            def get_eps(self, *args: Any, **kwargs: Any) -> torch.Tensor:
                return self.inner_model.apply_model(*args, **kwargs)

            def forward(self, x: torch.Tensor, sigma: torch.Tensor, **kw: Any) -> torch.Tensor:
                denoised = super().forward(x, sigma, **kw)
                ts = kd.utils.append_dims(self.sigma_to_t(sigma), x.ndim) * 10.0
                return (ts / (ts ** 2 + 0.25) ** 0.5 * denoised
                        + 0.25 / (ts ** 2 + 0.25) * x)

        return Denoiser()


# ------------------------------------------------------------------ running both sides
class Captured:
    def __init__(self) -> None:
        self.unet_kwargs: dict[str, Any] | None = None
        self.latents: torch.Tensor | None = None
        self.init_latents: torch.Tensor | None = None
        self.scheduler: A1111Scheduler | None = None


@pytest.fixture
def capture(engines: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[Callable[[str, GenerationRequest], Captured]]:
    handles: list[Any] = []

    def run(kind: str, request: GenerationRequest) -> Captured:
        got = Captured()
        engine = engines(kind)
        unet = engine._model.pipes.base.unet

        def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            if got.unet_kwargs is None:
                got.unet_kwargs = dict(kwargs)

        handles.append(unet.register_forward_pre_hook(hook, with_kwargs=True))
        real_decode = runner_module.decode_latents

        def decode(pipe: Any, latents: torch.Tensor) -> Any:
            got.latents = latents.detach().clone()
            got.scheduler = pipe.scheduler
            return real_decode(pipe, latents)

        real_add_noise = A1111Scheduler.add_noise

        def add_noise(self: A1111Scheduler, original: torch.Tensor, noise: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
            if got.init_latents is None:
                got.init_latents = original.detach().clone()
            return real_add_noise(self, original, noise, timesteps)

        monkeypatch.setattr(runner_module, "decode_latents", decode)
        monkeypatch.setattr(A1111Scheduler, "add_noise", add_noise)
        engine.generate(request)
        handles.pop().remove()
        assert got.latents is not None and got.unet_kwargs is not None
        return got

    yield run
    for h in handles:
        h.remove()


def reference_run(kd: Any, engine: Any, got: Captured, request: GenerationRequest,
                  strength: float | None = None, repaint: torch.Tensor | None = None
                  ) -> torch.Tensor:
    sampler, schedule, steps = request.sampler, request.schedule_type, request.steps
    pipe = engine._model.pipes.base
    config = engine._model.scheduler_config
    alphas = ldm_alphas_cumprod(config)
    kw = got.unet_kwargs
    assert kw is not None
    batch = request.batch_size
    ehs = kw["encoder_hidden_states"]  # diffusers' order: uncond, cond
    uncond, cond = ehs[:batch], ehs[batch:]
    added = None
    if kw.get("added_cond_kwargs"):  # SDXL: to A1111's order, cond then uncond
        added = {k: torch.cat([v[batch:], v[:batch]]) for k, v in
                 kw["added_cond_kwargs"].items()}
    model = CompVisModel(pipe.unet, alphas, added)
    v_pred = config.get("prediction_type") == "v_prediction"
    if sampler == "LCM":
        den = LCMDenoiser.make(kd, model)
    elif v_pred:
        den = kd.external.CompVisVDenoiser(model)
    else:
        den = kd.external.CompVisDenoiser(model)
    sdxl = engine._model.pipes.sdxl
    sigmas = a1111_get_sigmas(kd, den, sampler, schedule, steps, sdxl)
    full = sigmas
    seeds = [request.seed + i for i in range(batch)]
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    latent = got.latents.shape[1:] if got.latents is not None else None
    assert latent is not None
    noise = torch.stack([torch.randn(latent, generator=g) for g in gens])
    if strength is None:
        x = noise * sigmas[0]
    else:
        t_enc = int(min(strength, 0.999) * steps)
        sigmas = sigmas[steps - t_enc - 1:]
        assert got.init_latents is not None
        x = got.init_latents + noise * sigmas[0]
    model_fn = cfg_denoiser(den, cond, uncond, request.cfg_scale)
    def step_noise(*_: Any) -> torch.Tensor:  # A1111's ImageRNG.next, RNG "CPU"
        return torch.stack([torch.randn(latent, generator=g) for g in gens])

    if repaint is not None:  # A1111's CFG denoiser: denoised = init * mask + nmask * denoised
        init, guided = got.init_latents, model_fn
        assert init is not None

        def model_fn(x: torch.Tensor, sigma: torch.Tensor, **kw: Any) -> torch.Tensor:
            return init * (1 - repaint) + repaint * guided(x, sigma, **kw)

    if sampler == "Restart":
        return reference_restart(kd, model_fn, x, sigmas, step_noise)
    if sampler == "LCM":
        for i in range(len(sigmas) - 1):
            x = model_fn(x, sigmas[i] * x.new_ones([batch]))
            if sigmas[i + 1] > 0:
                x = x + sigmas[i + 1] * step_noise()
        return x
    fn = getattr(kd.sampling, FUNCS[sampler])
    extra: dict[str, Any] = {}
    if sampler in ANCESTRAL:
        extra["noise_sampler"] = step_noise
    if sampler in BROWNIAN:
        lo, hi = full[full > 0].min(), full.max()
        extra["noise_sampler"] = kd.sampling.BrownianTreeNoiseSampler(x, lo, hi, seed=seeds)
    if sampler == "DPM++ 2M SDE Heun":
        extra["solver_type"] = "heun"
    with torch.no_grad():
        out = fn(model_fn, x, sigmas, disable=True, **extra)
    if repaint is not None:  # and at the end: samples * nmask + init_latent * mask
        assert got.init_latents is not None
        out = got.init_latents * (1 - repaint) + repaint * out
    return out


def reference_restart(kd: Any, model_fn: Callable[..., torch.Tensor], x: torch.Tensor,
                      sigmas: torch.Tensor, noise: Callable[..., torch.Tensor]) -> torch.Tensor:
    """A1111's restart_sampler: its step list, each step one k-diffusion Heun step, noise
    from the generators when the sigma goes back up."""
    karras = kd.sampling.get_sigmas_karras
    steps = len(sigmas) - 1
    restart_at: dict[int, tuple[int, int, float]] = {}
    if steps >= 20:
        rs, rt = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras(steps - rs * rt, sigmas[-2].item(), sigmas[0].item())
        restart_at = {int(torch.argmin(abs(sigmas - 0.1))): (rs + 1, rt, 2.0)}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_at:
            n, times, top = restart_at[i + 1]
            hi_idx = int(torch.argmin(abs(sigmas - top)))
            if hi_idx < i + 1:
                again = karras(n, sigmas[i + 1].item(), sigmas[hi_idx].item())[:-1]
                pairs += list(itertools.pairwise(again)) * times
    last = None
    with torch.no_grad():
        for old, new in pairs:
            if last is not None and last < old:
                x = x + noise() * (old ** 2 - last ** 2) ** 0.5
            x = kd.sampling.sample_heun(model_fn, x, torch.stack([old, new]), disable=True)
            last = new
    return x


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    diff = (ours.float() - ref.float()).abs().max().item()
    scale = max(1.0, ref.abs().max().item())
    assert diff <= TOL * scale, f"max |diff| {diff:.3g} (reference max {scale:.3g})"
    return diff


def pairs(samplers: list[str]) -> list[tuple[str, str]]:
    return [(s, t) for s in samplers for t in ("Automatic", *SIGMA_SCHEDULES)]


# ---------------------------------------------------------------------------- the tests
def test_sigma_schedules_equal_a1111(kd: Any, tiny_models: dict[str, Path]) -> None:
    from sdstudio.engine.models import read_json
    from sdstudio.engine.samplers import build_scheduler

    config = read_json(tiny_models["sd1"] / "scheduler" / "scheduler_config.json")
    den = kd.external.CompVisDenoiser(CompVisModel(None, ldm_alphas_cumprod(config), None))
    assert den.sigmas[-1].item() == pytest.approx(14.6146, abs=1e-4)
    for sampler in K_SAMPLERS:
        if sampler == "LCM":
            continue
        for schedule in ("Automatic", *SIGMA_SCHEDULES):
            for steps in (1, 3, 7, 11, 20):
                for sdxl in (False, True):
                    ours = build_scheduler(sampler, config, schedule, sdxl=sdxl)
                    got = ours.sigmas_for(steps)  # type: ignore[attr-defined]
                    ref = a1111_get_sigmas(kd, den, sampler, schedule, steps, sdxl)
                    assert got.shape == ref.shape, (sampler, schedule, steps)
                    torch.testing.assert_close(got, ref.float(), rtol=1e-6, atol=1e-6,
                                               msg=f"{sampler} {schedule} {steps}")


def test_euler_a_starts_at_14_61(engines: Callable[[str], Any],
                                 make_request: Callable[..., GenerationRequest]) -> None:
    out = engines("sd1").generate(make_request(sampler="Euler a", steps=20))
    info = out[0].info.scheduler
    assert info["schedule_type"] == "Uniform"
    assert info["sigmas"][0] == pytest.approx(14.6146, abs=1e-4)
    assert info["sigmas"][1] == 0.0 and info["evaluations"] == 20


@pytest.mark.parametrize(("sampler", "schedule"), pairs(K_SAMPLERS))
def test_sd1_latents_equal_kdiffusion(kd: Any, sampler: str, schedule: str,
                                      engines: Callable[[str], Any], capture: Any,
                                      make_request: Callable[..., GenerationRequest]) -> None:
    batch = 2 if sampler in ANCESTRAL | BROWNIAN else 1
    request = make_request(sampler=sampler, schedule_type=schedule, steps=STEPS, seed=7,
                           batch_size=batch, cfg_scale=5.0).validated()
    got = capture("sd1", request)
    ref = reference_run(kd, engines("sd1"), got, request)
    assert got.latents is not None
    assert_close(got.latents, ref)


@pytest.mark.parametrize("sampler", [s for s in K_SAMPLERS if s != "LCM"])  # LCM: eps only
def test_sd2_v_prediction_latents_equal_kdiffusion(
        kd: Any, sampler: str, engines: Callable[[str], Any], capture: Any,
        make_request: Callable[..., GenerationRequest]) -> None:
    request = make_request("sd2-v", sampler=sampler, steps=STEPS, seed=3).validated()
    got = capture("sd2-v", request)
    assert got.latents is not None
    assert_close(got.latents, reference_run(kd, engines("sd2-v"), got, request))


@pytest.mark.parametrize(("sampler", "schedule"), [
    ("Euler a", "Automatic"), ("DPM++ 2M", "Karras"), ("DPM++ 2M SDE", "Exponential"),
    ("DPM2 a", "Align Your Steps"), ("Heun", "SGM Uniform")])
def test_sdxl_latents_equal_kdiffusion(kd: Any, sampler: str, schedule: str,
                                       engines: Callable[[str], Any], capture: Any,
                                       make_request: Callable[..., GenerationRequest]) -> None:
    request = make_request("sdxl", sampler=sampler, schedule_type=schedule, steps=3,
                           seed=5).validated()
    got = capture("sdxl", request)
    assert got.latents is not None
    assert_close(got.latents, reference_run(kd, engines("sdxl"), got, request))


def test_restart_with_its_restarts_equals_a1111(
        kd: Any, engines: Callable[[str], Any], capture: Any,
        make_request: Callable[..., GenerationRequest]) -> None:
    request = make_request(sampler="Restart", steps=20, seed=11).validated()
    got = capture("sd1", request)
    assert got.latents is not None
    assert_close(got.latents, reference_run(kd, engines("sd1"), got, request))


@pytest.mark.parametrize(("sampler", "strength"), [
    ("Euler a", 0.6), ("DPM++ 2M", 0.75), ("DPM++ SDE", 0.5), ("Heun", 0.9)])
def test_img2img_runs_a1111_sigmas(kd: Any, sampler: str, strength: float,
                                   engines: Callable[[str], Any], capture: Any,
                                   input_images: dict[str, Path],
                                   make_request: Callable[..., GenerationRequest]) -> None:
    steps = 10
    request = make_request(sampler=sampler, steps=steps, seed=9, strength=strength,
                           init_image=str(input_images["init"])).validated()
    got = capture("sd1", request)
    assert got.scheduler is not None and got.latents is not None
    t_enc = int(min(strength, 0.999) * steps)
    full = got.scheduler.sigmas_for(steps)
    torch.testing.assert_close(got.scheduler.run_sigmas, full[steps - t_enc - 1:])
    assert len(got.scheduler.run_sigmas) == t_enc + 2  # A1111 runs t_enc + 1 steps
    assert_close(got.latents, reference_run(kd, engines("sd1"), got, request, strength))


def test_ddim_equals_a1111_timesteps(engines: Callable[[str], Any], capture: Any,
                                     make_request: Callable[..., GenerationRequest]) -> None:
    """A1111's DDIM at 5 steps: timesteps 1, 201, ..., 801, evaluated from 801 down to 201,
    the last step to alphas_cumprod[1]; diffusers' DDIMScheduler (eta 0) on those timesteps
    computes the same update, so it is the reference here."""
    from diffusers import DDIMScheduler

    request = make_request(sampler="DDIM", steps=5, seed=4).validated()
    got = capture("sd1", request)
    assert got.latents is not None and got.unet_kwargs is not None
    engine = engines("sd1")
    config = engine._model.scheduler_config
    ref_sched = DDIMScheduler.from_config({**config, "set_alpha_to_one": False})
    ref_sched.alphas_cumprod = ldm_alphas_cumprod(config)
    ref_sched.num_inference_steps = 5
    unet = engine._model.pipes.base.unet
    ehs = got.unet_kwargs["encoder_hidden_states"]
    gen = torch.Generator("cpu").manual_seed(4)
    x = torch.randn(got.latents.shape[1:], generator=gen)[None]
    for t in (801, 601, 401, 201):
        with torch.no_grad():
            u, c = unet(torch.cat([x, x]), torch.tensor(float(t)),
                        encoder_hidden_states=ehs).sample.chunk(2)
        x = ref_sched.step(u + request.cfg_scale * (c - u), t, x).prev_sample
    assert_close(got.latents, x)


def test_model_evaluations_match_the_loops(tiny_models: dict[str, Path]) -> None:
    """core.sampler_names.model_evaluations (the torch-free count the test fake uses) equals
    the number of points each loop evaluates. Known exception: Restart at 20+ steps on a
    schedule whose last sigma above 0 is large (SGM Uniform, Simple at 20-21 steps) restarts
    after the last step, two evaluations fewer."""
    from sdstudio.engine.models import read_json
    from sdstudio.engine.samplers import build_scheduler

    config = read_json(tiny_models["sd1"] / "scheduler" / "scheduler_config.json")
    for sampler in SAMPLER_NAMES:
        schedules = ("Automatic",) if sampler in TIMESTEP_SAMPLERS else SCHEDULE_TYPES
        for schedule in schedules:
            sched = build_scheduler(sampler, config, schedule)
            for steps in (1, 2, 3, 7, 20, 36):
                for strength in (None, 0.3, 0.7, 1.0):
                    if strength is not None and int(steps * strength) < 1:
                        continue
                    if (sampler == "Restart" and steps >= 20
                            and schedule in ("SGM Uniform", "Simple")):
                        continue
                    expected = len(sched.plan(steps, strength))  # type: ignore[attr-defined]
                    assert model_evaluations(sampler, schedule, steps, strength) == expected, (
                        sampler, schedule, steps, strength)


# ----------------------------------------------------------------- UniPC (A1111's own)
def reference_unipc(engine: Any, got: Captured, request: GenerationRequest,
                    strength: float | None = None) -> torch.Tensor:
    """A1111 1.10's UniPC (tests/engine/_unipc_reference.py) around the same UNet: the model
    called at the continuous t_input, CFG on the outputs, v turned into eps with the
    alphas at int(t) (CompVisTimestepsVDenoiser); the noise from CPU generators."""
    from tests.engine import _unipc_reference

    config = engine._model.scheduler_config
    alphas = ldm_alphas_cumprod(config)
    unet = engine._model.pipes.base.unet
    assert got.unet_kwargs is not None and got.latents is not None
    ehs = got.unet_kwargs["encoder_hidden_states"]  # uncond, cond
    batch = request.batch_size
    v_pred = config.get("prediction_type") == "v_prediction"

    def eps(x: torch.Tensor, t_input: torch.Tensor) -> torch.Tensor:
        t = t_input.reshape(-1)[:1].expand(2 * batch)
        with torch.no_grad():
            out = unet(torch.cat([x, x]), t, encoder_hidden_states=ehs).sample
        if v_pred:
            i = t.to(torch.int)
            a = alphas[i][:, None, None, None]
            out = a.sqrt() * out + (1 - a).sqrt() * torch.cat([x, x])
        u, c = out.chunk(2)
        return u + (c - u) * request.cfg_scale

    gens = [torch.Generator("cpu").manual_seed(request.seed + i) for i in range(batch)]
    noise = torch.stack([torch.randn(got.latents.shape[1:], generator=g) for g in gens])
    steps = request.steps
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    if strength is None:
        return _unipc_reference.a1111_unipc(eps, alphas, noise, timesteps)
    t_enc = int(min(strength, 0.999) * steps)
    a = alphas[timesteps[t_enc]]
    assert got.init_latents is not None
    x = got.init_latents * a.sqrt() + noise * (1 - a).sqrt()
    return _unipc_reference.a1111_unipc(eps, alphas, x, timesteps[:t_enc], is_img2img=True)


@pytest.mark.parametrize(("kind", "steps", "batch"), [("sd1", 7, 2), ("sd1", 3, 1),
                                                      ("sd2-v", 5, 1)])
def test_unipc_equals_a1111s_uni_pc(kind: str, steps: int, batch: int,
                                    engines: Callable[[str], Any], capture: Any,
                                    make_request: Callable[..., GenerationRequest]) -> None:
    """7 steps: A1111 runs len(range(0, 1000, 142)) = 8 UniPC steps, orders 1, 2, 3, 3, 3,
    3, 2, 1."""
    request = make_request(kind, sampler="UniPC", steps=steps, seed=13, batch_size=batch,
                           cfg_scale=6.0).validated()
    got = capture(kind, request)
    assert got.latents is not None and got.scheduler is not None
    assert len(got.scheduler.timesteps) == len(range(0, 1000, 1000 // steps))
    assert_close(got.latents, reference_unipc(engines(kind), got, request))


def test_unipc_img2img_equals_a1111s_uni_pc(
        engines: Callable[[str], Any], capture: Any, input_images: dict[str, Path],
        make_request: Callable[..., GenerationRequest]) -> None:
    request = make_request(sampler="UniPC", steps=10, seed=21, strength=0.6,
                           init_image=str(input_images["init"])).validated()
    got = capture("sd1", request)
    assert got.scheduler is not None
    assert len(got.scheduler.timesteps[got.scheduler._pad:]) == 6  # t_enc = int(0.6 * 10)
    assert_close(got.latents, reference_unipc(engines("sd1"), got, request, 0.6))


@pytest.mark.parametrize(("sampler", "strength"), [("Euler a", 0.75), ("DPM++ 2M", 1.0)])
def test_inpaint_blends_as_a1111(kd: Any, sampler: str, strength: float,
                                 engines: Callable[[str], Any], capture: Any,
                                 input_images: dict[str, Path],
                                 make_request: Callable[..., GenerationRequest]) -> None:
    """An ordinary (4-channel) model: A1111 replaces the prediction outside the mask by the
    source's latents at every step and the result at the end; strength 1 runs as 0.999."""
    from PIL import Image

    from sdstudio.engine.images import request_inputs

    steps = 8
    request = make_request(sampler=sampler, steps=steps, seed=5, strength=strength,
                           init_image=str(input_images["init"]),
                           mask=str(input_images["mask"]), mask_blur=2).validated()
    got = capture("sd1", request)
    assert got.latents is not None and got.init_latents is not None
    _, job = request_inputs(request)
    assert job is not None
    h, w = got.latents.shape[2:]
    small = job.mask.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)  # A1111's latmask
    rounded = np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255.0)
    repaint = torch.from_numpy(rounded)[None, None].expand_as(got.latents)
    assert 0 < float(repaint.mean()) < 1
    ref = reference_run(kd, engines("sd1"), got, request, min(strength, 0.999), repaint)
    assert_close(got.latents, ref)
    keep = repaint == 0  # outside the mask: exactly the source's latents
    torch.testing.assert_close(got.latents[keep], got.init_latents[keep])
