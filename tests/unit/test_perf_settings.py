"""PerfSettings validation and the pure helpers behind the performance knobs."""

from __future__ import annotations

import argparse

import pytest
import torch

from sdlab.cli.common import parse_bytes
from sdlab.errors import InvalidRequestError
from sdlab.pipeline.perf import ATTENTION, PerfSettings, module_bytes, vae_keeps_fp32


def test_defaults_change_nothing() -> None:
    s = PerfSettings()
    assert (s.attention, s.offload, s.vae_tiling, s.compile_unet, s.channels_last) == ("sdpa", "none", False, False, False)
    s.check_device(torch.device("cpu"))


@pytest.mark.parametrize("kwargs,match", [
    ({"attention": "flash"}, "attention"), ({"offload": "disk"}, "offload"), ({"vae_dtype": "fp8"}, "vae_dtype"),
    ({"vae_tile_size": 100}, "vae_tile_size"), ({"vae_tile_size": 32}, "vae_tile_size"),
    ({"max_cache_bytes": 0}, "max_cache_bytes"), ({"attention_slice_size": 0}, "attention_slice_size"),
])
def test_invalid_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        PerfSettings(**kwargs)


def test_attention_aliases() -> None:
    assert ATTENTION.canonical("default") == "sdpa" and ATTENTION.canonical("Slicing") == "sliced"


def test_offload_needs_cuda() -> None:
    with pytest.raises(InvalidRequestError, match="offload none"):
        PerfSettings(offload="model").check_device(torch.device("cpu"))
    PerfSettings(offload="sequential").check_device(torch.device("cuda"))


@pytest.mark.parametrize("vae_dtype,family,dtype,expected", [
    ("auto", "sdxl", torch.float16, True), ("auto", "sdxl-refiner", torch.float16, True),
    ("auto", "sd1", torch.float16, False), ("auto", "sdxl", torch.bfloat16, False),
    ("fp32", "sd1", torch.bfloat16, True), ("fp32", "sd1", torch.float32, False), ("model", "sdxl", torch.float16, False),
])
def test_vae_upcast_rule(vae_dtype: str, family: str, dtype: torch.dtype, expected: bool) -> None:
    assert vae_keeps_fp32(PerfSettings(vae_dtype=vae_dtype), family, dtype) is expected


def test_module_bytes_counts_parameters_and_buffers() -> None:
    module = torch.nn.BatchNorm1d(10).to(torch.float16)  # 2x10 params + 2x10 buffers fp16 + int64 counter
    assert module_bytes(module) == 40 * 2 + 8


@pytest.mark.parametrize("text,expected", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29),
                                           ("1000", 1000), ("2kb", 2048)])
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_parse_bytes_rejects_nonsense() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bytes("lots")
