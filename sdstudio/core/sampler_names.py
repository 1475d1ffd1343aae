"""Sampler names as people know them from AUTOMATIC1111, and the other spellings people paste.

``engine/samplers.py`` maps each name to a diffusers scheduler; a test checks the two lists
agree. :func:`canonical_sampler` is the one place that turns a spelling from the CLI, a
prompt list or another tool's infotext into one of :data:`SAMPLER_NAMES`.
"""

from __future__ import annotations

import re

SAMPLER_NAMES: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM2",
    "DPM2 a",
    "DDIM",
    "PLMS",
    "LMS",
    "LMS Karras",
    "Heun",
    "UniPC",
)

# Spellings of other tools (ComfyUI/Fooocus internal names, old k-diffusion names), compared
# after normalising (see _norm): "k_euler_a", "euler_ancestral", "dpmpp_2m_sde_gpu", ...
_ALIASES: dict[str, str] = {
    "eulerancestral": "Euler a",
    "dpm2ancestral": "DPM2 a",
    "dpmppsdegpu": "DPM++ SDE",
    "dpmpp2msdegpu": "DPM++ 2M SDE",
    "unipcbh2": "UniPC",
}


def _norm(name: str) -> str:
    """Case, ``++``/``pp``, separators and a ``k_`` prefix do not matter."""
    key = name.strip().lower().replace("++", "pp")
    key = key.removeprefix("k_")
    return re.sub(r"[^a-z0-9]", "", key)


_BY_KEY: dict[str, str] = {_norm(n): n for n in SAMPLER_NAMES} | _ALIASES


def canonical_sampler(name: str) -> str | None:
    """Our name for a sampler spelled any common way, or None when it is not one we have."""
    return _BY_KEY.get(_norm(name)) if isinstance(name, str) and name.strip() else None


def normalize_sampler(name: str) -> str:
    """``canonical_sampler`` or, for an unknown name, the name itself (validation then lists
    the choices)."""
    return canonical_sampler(name) or name.strip()
