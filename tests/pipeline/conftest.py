"""Shared fixtures for pipeline tests: tiny random checkpoints in an A1111-style models folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tiny_checkpoints import make_tiny_checkpoint

from sdlab.engine import Engine


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding tiny SD1, SD2-v, SDXL and SD1-inpainting checkpoints."""
    root = tmp_path_factory.mktemp("models")
    folder = root / "Stable-diffusion"
    folder.mkdir()
    make_tiny_checkpoint(folder / "tiny-sd1.safetensors", "sd1", seed=1)
    make_tiny_checkpoint(folder / "tiny-sd2v.safetensors", "sd2", seed=2, metadata={"modelspec.prediction_type": "v"})
    make_tiny_checkpoint(folder / "tiny-sdxl.safetensors", "sdxl", seed=3)
    make_tiny_checkpoint(folder / "tiny-inpaint.safetensors", "sd1", "inpainting", seed=4)
    return root


@pytest.fixture(scope="session")
def engine(models_root: Path) -> Engine:
    """One engine for the session (device cpu, fp32), caching up to four models."""
    return Engine(models_dir=models_root, device="cpu", dtype="fp32", max_models=4)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """An engine over an empty models folder, so the embedded default model (toyworld-64) is the one loaded."""
    return Engine(models_dir=tmp_path_factory.mktemp("empty-models"), device="cpu", dtype="fp32")
