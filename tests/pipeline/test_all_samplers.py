"""Every A1111 sampler runs end to end on a tiny SD-architecture model (3 steps), and every sampler x
schedule type combination yields a valid schedule (or a refusal that says why)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdlab.engine import Engine
from sdlab.errors import InvalidRequestError
from sdlab.infotext import parse_infotext
from sdlab.models.load import sd_alphas_cumprod
from sdlab.samplers.registry import SAMPLERS, resolve_sampler, sampler_timesteps, schedule_sigmas
from sdlab.samplers.schedules import SCHEDULES
from sdlab.samplers.sigma_model import SigmaModel
from sdlab.types import GenerationRequest

BASE = GenerationRequest(
    prompt="a red [circle|square]", negative_prompt="blue", width=32, height=32, steps=3, seed=5, model="tiny-sd1"
)
SAMPLER_NAMES = SAMPLERS.names()
SCHEDULE_NAMES = SCHEDULES.names()


@pytest.mark.parametrize("index", range(len(SAMPLER_NAMES)))
def test_sampler_runs_end_to_end(engine: Engine, index: int) -> None:
    sampler = SAMPLER_NAMES[index]
    schedule = SCHEDULE_NAMES[index % len(SCHEDULE_NAMES)] if SAMPLERS.get(sampler).kind == "kdiffusion" else "Automatic"
    result = engine.generate(BASE.replace(sampler=sampler, schedule_type=schedule))
    image = np.asarray(result.images[0].image)
    assert image.shape == (32, 32, 3) and image.std() > 0
    assert parse_infotext(result.images[0].infotext)["Sampler"] == sampler


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_schedule_type_gives_a_valid_schedule(sampler: str) -> None:
    model = SigmaModel.from_alphas_cumprod(sd_alphas_cumprod())
    refused = []
    for schedule in SCHEDULE_NAMES:
        entry, label = resolve_sampler(sampler, schedule)
        try:
            values = sampler_timesteps(sampler, 3) if entry.kind == "timestep" else schedule_sigmas(entry, label, 3, model)
        except InvalidRequestError as exc:
            refused.append((schedule, str(exc)))
            continue
        assert torch.isfinite(values).all() and len(values) >= 2
        if entry.kind != "timestep":
            assert (values[:-1] >= values[1:]).all(), f"{sampler} / {schedule} sigmas do not decrease: {values}"
    assert all(message for _, message in refused)
    assert len(refused) <= (len(SCHEDULE_NAMES) if SAMPLERS.get(sampler).kind == "lcm" else 0), refused
