"""sdlab: Stable Diffusion on diffusers with AUTOMATIC1111-exact results, fully offline."""

from __future__ import annotations

__version__ = "0.1.0"
