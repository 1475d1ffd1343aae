"""SD Studio: a native desktop application for Stable Diffusion."""

__version__ = "0.1.0"
