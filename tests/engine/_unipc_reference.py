"""AUTOMATIC1111 1.10's UniPC, transcribed for the tests from its code, not from SD Studio's.

``modules/sd_samplers_timesteps_impl.py`` (``unipc``, ``UniPCCFG``) drives
``modules/models/diffusion/uni_pc/uni_pc.py`` (``NoiseScheduleVP("discrete")``,
``UniPC.sample`` multistep, ``multistep_uni_pc_bh_update``) with A1111's default options:
variant bh1, skip type time_uniform, order 3, lower order final, no denoise_to_zero. The
structure follows A1111's: the ``model_prev_list`` / ``t_prev_list`` shifting, the R matrix and
b vector solved with ``torch.linalg.solve`` (0.5 for the order-2 predictor and order-1
corrector), ``einsum`` of the rhos with the stacked D1s. The piecewise-linear log(alpha) is
computed with numpy's interp in float64 here (A1111: its own interpolate_fn in float32), so the
two sides share no code. What the test passes in: ``eps(x, t_input)``, the CFG-combined model
output as A1111's CFGDenoiserTimesteps returns it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Tensor = torch.Tensor


class NoiseScheduleVP:
    def __init__(self, alphas_cumprod: Tensor) -> None:
        self.total_N = len(alphas_cumprod)
        self.T = 1.0
        self.t_array = np.linspace(0.0, 1.0, self.total_N + 1)[1:]
        self.log_alpha_array = 0.5 * np.log(alphas_cumprod.double().numpy())

    def marginal_log_mean_coeff(self, t: Tensor) -> Tensor:
        values = np.interp(t.double().numpy().reshape(-1), self.t_array, self.log_alpha_array)
        return torch.tensor(values, dtype=torch.float32)

    def marginal_alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t: Tensor) -> Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t: Tensor) -> Tensor:
        log_mean_coeff = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_mean_coeff))
        return log_mean_coeff - log_std


def _expand(v: Tensor, dims: int) -> Tensor:
    return v[(...,) + (None,) * (dims - 1)]


class UniPC:
    def __init__(self, eps: Callable[[Tensor, Tensor], Tensor], ns: NoiseScheduleVP) -> None:
        self.eps, self.noise_schedule, self.variant = eps, ns, "bh1"

    def model_fn(self, x: Tensor, t: Tensor) -> Tensor:  # data_prediction_fn
        t_input = (t - 1.0 / self.noise_schedule.total_N) * 1000.0  # UniPCCFG
        noise = self.eps(x, t_input)
        dims = x.dim()
        alpha_t = self.noise_schedule.marginal_alpha(t)
        sigma_t = self.noise_schedule.marginal_std(t)
        return (x - _expand(sigma_t, dims) * noise) / _expand(alpha_t, dims)

    def bh_update(self, x: Tensor, model_prev_list: list[Tensor], t_prev_list: list[Tensor],
                  t: Tensor, order: int, use_corrector: bool = True
                  ) -> tuple[Tensor, Tensor | None]:
        ns = self.noise_schedule
        dims = x.dim()
        t_prev_0 = t_prev_list[-1]
        lambda_prev_0 = ns.marginal_lambda(t_prev_0)
        lambda_t = ns.marginal_lambda(t)
        model_prev_0 = model_prev_list[-1]
        sigma_prev_0, sigma_t = ns.marginal_std(t_prev_0), ns.marginal_std(t)
        alpha_t = torch.exp(ns.marginal_log_mean_coeff(t))
        h = lambda_t - lambda_prev_0
        rks_list: list[Tensor | float] = []
        d1_list = []
        for i in range(1, order):
            lambda_prev_i = ns.marginal_lambda(t_prev_list[-(i + 1)])
            rk = ((lambda_prev_i - lambda_prev_0) / h)[0]
            rks_list.append(rk)
            d1_list.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
        rks_list.append(1.0)
        rks = torch.tensor([float(r) for r in rks_list])
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = hh  # bh1
        rows, b_list = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks, i - 1))
            b_list.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        r_mat = torch.stack(rows)
        b = torch.tensor([float(v) for v in b_list])
        d1s = torch.stack(d1_list, dim=1) if d1_list else None
        rhos_p = None
        if d1s is not None:
            rhos_p = (torch.tensor([0.5]) if order == 2
                      else torch.linalg.solve(r_mat[:-1, :-1], b[:-1]))
        x_t_ = (_expand(sigma_t / sigma_prev_0, dims) * x
                - _expand(alpha_t * h_phi_1, dims) * model_prev_0)
        pred_res: Tensor | float = (torch.einsum("k,bkchw->bchw", rhos_p, d1s)
                                    if d1s is not None and rhos_p is not None else 0)
        x_t = x_t_ - _expand(alpha_t * b_h, dims) * pred_res
        model_t = None
        if use_corrector:
            rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r_mat, b)
            model_t = self.model_fn(x_t, t)
            corr_res: Tensor | float = (torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s)
                                        if d1s is not None else 0)
            d1_t = model_t - model_prev_0
            x_t = x_t_ - _expand(alpha_t * b_h, dims) * (corr_res + rhos_c[-1] * d1_t)
        return x_t, model_t

    def sample(self, x: Tensor, steps: int, t_start: float | None = None, order: int = 3
               ) -> Tensor:
        t_0 = 1.0 / self.noise_schedule.total_N
        t_T = self.noise_schedule.T if t_start is None else t_start
        assert steps >= order, "UniPC order must be < sampling steps"
        timesteps = torch.linspace(t_T, t_0, steps + 1)  # time_uniform
        vec_t = timesteps[0].expand(x.shape[0])
        model_prev_list = [self.model_fn(x, vec_t)]
        t_prev_list = [vec_t]
        for init_order in range(1, order):
            vec_t = timesteps[init_order].expand(x.shape[0])
            x, model_x = self.bh_update(x, model_prev_list, t_prev_list, vec_t, init_order)
            assert model_x is not None
            model_prev_list.append(model_x)
            t_prev_list.append(vec_t)
        for step in range(order, steps + 1):
            vec_t = timesteps[step].expand(x.shape[0])
            step_order = min(order, steps + 1 - step)  # lower_order_final
            x, model_x = self.bh_update(x, model_prev_list, t_prev_list, vec_t, step_order,
                                        use_corrector=step != steps)
            for i in range(order - 1):
                t_prev_list[i] = t_prev_list[i + 1]
                model_prev_list[i] = model_prev_list[i + 1]
            t_prev_list[-1] = vec_t
            if step < steps:
                assert model_x is not None
                model_prev_list[-1] = model_x
        return x


def a1111_unipc(eps: Callable[[Tensor, Tensor], Tensor], alphas_cumprod: Tensor, x: Tensor,
                timesteps: Tensor, is_img2img: bool = False) -> Tensor:
    """sd_samplers_timesteps_impl.unipc: ``timesteps`` as CompVisSampler passes them."""
    t_start = float(timesteps[-1]) / 1000 + 1 / 1000 if is_img2img else None
    ns = NoiseScheduleVP(alphas_cumprod)
    with torch.no_grad():
        return UniPC(eps, ns).sample(x, steps=len(timesteps), t_start=t_start)
