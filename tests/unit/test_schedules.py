"""sdlab.samplers.sigma_model / schedules: the SD table, t <-> sigma, schedule shapes, overrides, errors."""

from __future__ import annotations

import math

import pytest
import torch

from sdlab.errors import InvalidRequestError
from sdlab.samplers.schedules import AYS_SD15, AYS_SDXL, SCHEDULES, get_sigmas
from sdlab.samplers.sigma_model import SigmaModel, scaled_linear_alphas_cumprod, sd_sigma_model

MODEL = sd_sigma_model()
A1111_SIGMA_MIN = 0.029167532920837402  # model_wrap.sigmas[0].item() for SD 1.5
A1111_SIGMA_MAX = 14.614642143249512


def test_sd_table_range_matches_a1111() -> None:
    assert MODEL.num_timesteps == 1000
    assert MODEL.sigma_min == A1111_SIGMA_MIN
    assert MODEL.sigma_max == A1111_SIGMA_MAX
    assert bool((MODEL.sigmas[1:] > MODEL.sigmas[:-1]).all())
    assert MODEL.alphas_cumprod.dtype == torch.float32


def test_alphas_cumprod_is_the_scaled_linear_product() -> None:
    ac = scaled_linear_alphas_cumprod()
    assert ac.shape == (1000,)
    first_beta = 0.00085
    assert ac[0].item() == pytest.approx(1 - first_beta, rel=1e-7)
    assert ac[-1].item() == pytest.approx(1 / (1 + A1111_SIGMA_MAX**2), rel=1e-6)


def test_sigma_to_t_ends_and_clamping() -> None:
    assert MODEL.sigma_to_t(MODEL.sigma_max).item() == 999.0
    assert MODEL.sigma_to_t(MODEL.sigma_min).item() == 0.0
    assert MODEL.sigma_to_t(100.0).item() == 999.0
    assert MODEL.sigma_to_t(1e-4).item() == 0.0
    assert MODEL.sigma_to_t(torch.tensor([[1.0, 2.0]])).shape == (1, 2)


@pytest.mark.parametrize("t", [0.0, 0.25, 17.5, 500.0, 998.75, 999.0])
def test_sigma_to_t_inverts_t_to_sigma(t: float) -> None:
    assert MODEL.sigma_to_t(MODEL.t_to_sigma(t)).item() == pytest.approx(t, abs=2e-3)


def test_t_to_sigma_is_log_linear_between_entries() -> None:
    s = MODEL.t_to_sigma(10.5).item()
    assert s == pytest.approx(math.sqrt(MODEL.sigmas[10].item() * MODEL.sigmas[11].item()), rel=1e-6)
    with pytest.raises(InvalidRequestError, match="timesteps"):
        MODEL.t_to_sigma(1000.0)


@pytest.mark.parametrize("bad", [torch.tensor([0.5]), torch.tensor([0.5, 1.0]), torch.ones(2, 2), [0.5, 0.4]])
def test_sigma_model_rejects_bad_tables(bad: object) -> None:
    with pytest.raises(InvalidRequestError):
        SigmaModel.from_alphas_cumprod(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("label", SCHEDULES.names())
@pytest.mark.parametrize("n", [1, 7, 30])
def test_every_schedule_descends_from_about_sigma_max(label: str, n: int) -> None:
    sigmas = get_sigmas(label, n, MODEL)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1 and sigmas.device.type == "cpu"
    assert bool((sigmas[1:] <= sigmas[:-1]).all()), sigmas
    assert sigmas[0].item() <= A1111_SIGMA_MAX * (1 + 1e-4)  # AYS tables start at 14.615
    if label == "KL Optimal":  # A1111 quirk: no trailing zero, ends at sigma_min
        assert len(sigmas) == n + 1 and sigmas[-1].item() == pytest.approx(A1111_SIGMA_MIN, rel=1e-5)
    elif label == "DDIM":
        assert sigmas[-1].item() == 0.0 and len(sigmas) >= n + 1
    else:
        assert len(sigmas) == n + 1 and sigmas[-1].item() == 0.0


def test_ddim_takes_an_extra_step_when_1000_is_not_divisible() -> None:
    assert len(get_sigmas("DDIM", 30, MODEL)) == 32  # indices 1, 34, ..., 991 (30 + 1 values) + 0
    assert len(get_sigmas("DDIM", 10, MODEL)) == 11
    assert get_sigmas("DDIM", 10, MODEL)[0].item() == MODEL.sigmas[901].item()


def test_karras_ends_and_rho() -> None:
    sigmas = get_sigmas("Karras", 10, MODEL)
    assert sigmas[0].item() == pytest.approx(A1111_SIGMA_MAX, rel=1e-6)
    assert sigmas[-2].item() == pytest.approx(A1111_SIGMA_MIN, rel=1e-6)
    steeper = get_sigmas("karras", 10, MODEL, rho=3.0)
    assert steeper[5].item() > sigmas[5].item()  # a smaller rho stays higher in the middle
    assert torch.equal(get_sigmas("Karras", 10, MODEL, rho=0), sigmas)  # 0 = unused (A1111 option value)


def test_rho_is_ignored_by_schedules_without_one() -> None:
    assert torch.equal(get_sigmas("Exponential", 8, MODEL, rho=3.0), get_sigmas("Exponential", 8, MODEL))


def test_polyexponential_with_rho_1_is_exponential() -> None:
    assert torch.allclose(get_sigmas("Polyexponential", 12, MODEL), get_sigmas("Exponential", 12, MODEL), rtol=1e-5)


def test_sigma_overrides() -> None:
    sigmas = get_sigmas("Exponential", 5, MODEL, sigma_min=0.1, sigma_max=10.0)
    assert sigmas[0].item() == pytest.approx(10.0, rel=1e-6) and sigmas[-2].item() == pytest.approx(0.1, rel=1e-6)
    normal = get_sigmas("Normal", 5, MODEL, sigma_max=5.0)
    assert normal[0].item() == pytest.approx(5.0, rel=1e-4)
    assert torch.equal(get_sigmas("Uniform", 5, MODEL, sigma_max=5.0), get_sigmas("Uniform", 5, MODEL))


def test_automatic_is_uniform_in_timestep() -> None:
    sigmas = get_sigmas("Automatic", 4, MODEL)
    assert torch.equal(sigmas, get_sigmas("uniform", 4, MODEL))
    assert [MODEL.sigma_to_t(s).item() for s in sigmas[:-1]] == pytest.approx([999, 666, 333, 0], abs=1e-3)


def test_simple_takes_model_sigmas_from_the_top() -> None:
    sigmas = get_sigmas("Simple", 4, MODEL)
    expected = [MODEL.sigmas[i].item() for i in (999, 749, 499, 249)] + [0.0]
    assert sigmas.tolist() == expected


@pytest.mark.parametrize(("family", "table"), [("sd1", AYS_SD15), ("sdxl", AYS_SDXL), ("sdxl_refiner", AYS_SDXL)])
def test_align_your_steps_tables(family: str, table: tuple[float, ...]) -> None:
    sigmas = get_sigmas("Align Your Steps", 11, MODEL, family=family)
    assert sigmas.tolist() == torch.tensor([*table, 0.0]).tolist()
    resampled = get_sigmas("align_your_steps", 21, MODEL, family=family)
    assert resampled[::2].tolist() == pytest.approx([*table, 0.0][:11], rel=1e-5)  # doubling keeps the knots


def test_beta_is_symmetric_around_the_middle_of_the_range() -> None:
    sigmas = get_sigmas("Beta", 5, MODEL)
    mid = (A1111_SIGMA_MIN + A1111_SIGMA_MAX) / 2
    assert sigmas[2].item() == pytest.approx(mid, rel=1e-6)  # Beta(0.6, 0.6) median is 0.5
    assert sigmas[1].item() - mid == pytest.approx(mid - sigmas[3].item(), rel=1e-5)


def test_aliases_resolve_to_a1111_labels() -> None:
    assert SCHEDULES.canonical("sgm_uniform") == "SGM Uniform"
    assert SCHEDULES.canonical("SGMUniform") == "SGM Uniform"
    assert SCHEDULES.canonical("kl_optimal") == "KL Optimal"
    assert SCHEDULES.get("karras").default_rho == 7.0
    assert SCHEDULES.get("Exponential").default_rho is None


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("Karras", 0), {}, "steps"),
        (("Karras", 2.0), {}, "steps"),
        (("Karras", True), {}, "steps"),
        (("Linear", 10), {}, "valid schedule types"),
        (("Karras", 10), {"sigma_min": -1.0}, "sigma_min"),
        (("Karras", 10), {"sigma_max": float("nan")}, "sigma_max"),
        (("Karras", 10), {"sigma_min": 20.0}, "smaller"),
        (("Karras", 10), {"rho": -2.0}, "rho"),
    ],
)
def test_bad_requests_raise(args: tuple[object, ...], kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        get_sigmas(*args, MODEL, **kwargs)  # type: ignore[arg-type]
