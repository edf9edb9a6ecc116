"""GuidanceCore's instruct-pix2pix path against A1111's combine_denoised_for_edit_model, with a fake UNet."""

from __future__ import annotations

import pytest
import torch

from sdlab.errors import InvalidRequestError
from sdlab.samplers.denoiser import GuidanceCore
from sdlab.samplers.types import MultiCond


def fake_inner(x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
    """Output per row: x + the row's context value + 10 * its image scale."""
    per_row = cond["context"][:, 0, 0] + 10.0 * cond["image_scale"]
    return x + per_row.view(-1, 1, 1, 1)


def _context(value: float, rows: int, tokens: int = 77) -> dict:
    return {"context": torch.full((rows, tokens, 4), value)}


@pytest.mark.parametrize("uncond_tokens", [77, 154])  # joined in one call, or three calls
def test_edit_combination(uncond_tokens: int) -> None:
    x, sigma = torch.zeros(2, 4, 3, 3), torch.ones(2)
    calls: list[int] = []

    def inner(x_in: torch.Tensor, s: torch.Tensor, cond: dict) -> torch.Tensor:
        calls.append(x_in.shape[0])
        return fake_inner(x_in, s, cond)

    core = GuidanceCore(inner, lambda step: _context(2.0, 2), lambda step: _context(3.0, 2, uncond_tokens),
                        cfg_scale=7.0, image_cfg_scale=1.5)
    guided, plain = core.run(x, sigma)
    # cond 2 + 10 = 12, image-only 3 + 10 = 13, neither 3: 3 + 7 * (12 - 13) + 1.5 * (13 - 3) = 11
    torch.testing.assert_close(guided, torch.full_like(x, 11.0))
    torch.testing.assert_close(plain, torch.full_like(x, 3.0))
    assert calls == ([6] if uncond_tokens == 77 else [2, 2, 2])
    assert core.step == 1


def test_edit_guidance_refuses_and_prompts() -> None:
    two_conds = MultiCond(conds_list=(((0, 1.0), (1, 0.5)),), tensor=_context(2.0, 2))
    core = GuidanceCore(fake_inner, lambda step: two_conds, lambda step: _context(3.0, 1), cfg_scale=7.0,
                        image_cfg_scale=1.5)
    with pytest.raises(InvalidRequestError, match="AND is not supported"):
        core.run(torch.zeros(1, 4, 3, 3), torch.ones(1))
