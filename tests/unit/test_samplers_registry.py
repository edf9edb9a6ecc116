"""Sampler registry: names, aliases, legacy schedule suffixes, A1111's get_sigmas rules."""

from __future__ import annotations

import pytest
import torch

from sdlab.errors import InvalidRequestError, SdlabError
from sdlab.samplers.registry import (
    SAMPLERS,
    SamplerEntry,
    effective_schedule,
    resolve_sampler,
    sampler_sigmas,
    sampler_timesteps,
    schedule_infotext,
)
from sdlab.samplers.schedules import get_sigmas
from sdlab.samplers.sigma_model import sd_sigma_model

MODEL = sd_sigma_model()
A1111_NAMES = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
    "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
]


def test_all_twenty_a1111_samplers_are_registered() -> None:
    assert sorted(SAMPLERS.names()) == sorted(A1111_NAMES)


@pytest.mark.parametrize(
    ("alias", "name"),
    [("k_euler_a", "Euler a"), ("k_euler_ancestral", "Euler a"), ("k_dpmpp_2m", "DPM++ 2M"), ("K_LMS", "LMS"),
     ("k_dpm_ad", "DPM adaptive"), ("k_dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"), ("ddim_cfgpp", "DDIM CFG++")],
)
def test_aliases(alias: str, name: str) -> None:
    assert SAMPLERS.get(alias).name == name


@pytest.mark.parametrize(
    ("name", "schedule", "expected"),
    [
        ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Automatic")),  # Karras is its default -> Automatic
        ("DPM++ 2M Exponential", "Automatic", ("DPM++ 2M", "Exponential")),
        ("Euler a Karras", "Automatic", ("Euler a", "Karras")),
        ("dpm++ sde karras", "Automatic", ("DPM++ SDE", "Automatic")),
        ("DPM++ 2M SDE Heun Karras", "Automatic", ("DPM++ 2M SDE Heun", "Karras")),
        ("Euler", "Exponential", ("Euler", "Exponential")),
        ("Euler a", "Automatic", ("Euler a", "Automatic")),
        ("LMS", "karras", ("LMS", "Karras")),
        ("Euler SGMUniform", "Automatic", ("Euler", "SGM Uniform")),
    ],
)
def test_resolve_sampler_legacy_names(name: str, schedule: str, expected: tuple[str, str]) -> None:
    entry, label = resolve_sampler(name, schedule)
    assert (entry.name, label) == expected


def test_resolve_without_convert_keeps_the_explicit_default() -> None:
    assert resolve_sampler("DPM++ 2M Karras", convert_automatic=False)[1] == "Karras"


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(InvalidRequestError, match="valid samplers: .*Euler a"):
        resolve_sampler("Euler b")
    with pytest.raises(InvalidRequestError, match="schedule type"):
        resolve_sampler("Euler", "Wobbly")


def test_sampler_sigmas_automatic_uses_the_default_scheduler() -> None:
    got = sampler_sigmas("DPM++ 2M", "Automatic", 10, MODEL)
    assert torch.equal(got, get_sigmas("Karras", 10, MODEL))
    assert torch.equal(sampler_sigmas("Euler", "Automatic", 10, MODEL), get_sigmas("Automatic", 10, MODEL))


def test_sampler_sigmas_discard_penultimate() -> None:
    full = get_sigmas("Karras", 11, MODEL)
    got = sampler_sigmas("DPM2", "Automatic", 10, MODEL)
    assert len(got) == 11 and float(got[-1]) == 0.0
    assert torch.equal(got, torch.cat([full[:-2], full[-1:]]))
    assert len(sampler_sigmas("DPM++ 3M SDE", "Karras", 4, MODEL)) == 5


def test_sampler_sigmas_rejects_timestep_samplers_and_bad_steps() -> None:
    with pytest.raises(InvalidRequestError, match="timesteps"):
        sampler_sigmas("DDIM", "Automatic", 10, MODEL)
    with pytest.raises(InvalidRequestError, match="steps"):
        sampler_sigmas("Euler", "Automatic", 0, MODEL)
    with pytest.raises(InvalidRequestError, match="sigmas"):
        sampler_timesteps("Euler", 10)


def test_sampler_timesteps() -> None:
    assert sampler_timesteps("DDIM", 4).tolist() == [1, 251, 501, 751]


def test_schedule_infotext_and_effective_schedule() -> None:
    assert schedule_infotext(SAMPLERS.get("DPM++ 2M"), "Automatic") == {"Schedule type": "Karras"}
    assert schedule_infotext(SAMPLERS.get("Euler"), "Automatic") == {}
    assert schedule_infotext(SAMPLERS.get("DDIM"), "Karras") == {}
    assert effective_schedule(SAMPLERS.get("DPM++ 3M SDE"), "Automatic") == "Exponential"


def test_entry_flags_follow_a1111() -> None:
    second = {e.name for _, e in SAMPLERS if e.second_order}
    assert second == {"Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "Restart"}
    brownian = {e.name for _, e in SAMPLERS if e.uses_brownian}
    assert brownian == {"DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}
    assert SAMPLERS.get("Heun").prompt_schedule_steps(10) == 20
    assert dict(SAMPLERS.get("DPM fast").options)["eta"] == 1.0
    assert dict(SAMPLERS.get("DPM++ 2M SDE Heun").options)["solver_type"] == "heun"


def test_functions_resolve_lazily_and_missing_ones_fail_clearly() -> None:
    assert callable(SAMPLERS.get("Euler a").function)
    broken = SamplerEntry("Nope", "kdiffusion", "sdlab.samplers.not_there:sample_nope")
    with pytest.raises(SdlabError, match="Nope.*not available"):
        _ = broken.function
