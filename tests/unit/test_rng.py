"""sdlab.rng / sdlab.rng_philox: Philox KATs, sources, slerp, seed resize, ImageRNG, seed rules."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sdlab.errors import InvalidRequestError
from sdlab.rng import (
    NOISE_SOURCES,
    ImageRNG,
    SeedSpec,
    create_generator,
    paste_centered,
    randn_local,
    resize_noise_shape,
    resolve_seeds,
    slerp,
)
from sdlab.rng_philox import PhiloxGenerator, philox_4x32, philox_randn

SHAPE = (4, 4, 6)


# Random123's published known-answer vectors for Philox-4x32-10: (counter, key) -> output.
@pytest.mark.parametrize(
    ("counter", "key", "expected"),
    [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]) -> None:
    words = philox_4x32(tuple(np.array([c], dtype=np.uint64) for c in counter), key)
    assert tuple(int(w[0]) for w in words) == expected


def test_philox_values_depend_on_flat_index_not_shape() -> None:
    flat = PhiloxGenerator(42).randn((24,))
    assert torch.equal(PhiloxGenerator(42).randn((2, 3, 4)).ravel(), flat)
    assert torch.equal(PhiloxGenerator(42).randn((5,)), flat[:5])


def test_philox_offset_advances_per_call() -> None:
    gen = PhiloxGenerator(7)
    first, second = gen.randn((8,)), gen.randn((8,))
    assert gen.offset == 2
    assert not torch.equal(first, second)
    assert torch.equal(second, torch.from_numpy(philox_randn(7, 1, 8)))


def test_philox_uses_high_seed_bits() -> None:
    assert not torch.equal(PhiloxGenerator(2**32).randn((8,)), PhiloxGenerator(0).randn((8,)))


def test_philox_is_standard_normal() -> None:
    x = torch.from_numpy(philox_randn(1234, 0, 200_000)).double()
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.5])
def test_bad_seeds_are_rejected(seed: object) -> None:
    with pytest.raises(InvalidRequestError, match="seed"):
        PhiloxGenerator(seed)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="seed"):
        create_generator("CPU", seed)  # type: ignore[arg-type]


def test_source_registry_names_and_aliases() -> None:
    assert NOISE_SOURCES.names() == ("GPU", "CPU", "NV")
    assert NOISE_SOURCES.canonical("philox") == "NV"
    assert NOISE_SOURCES.canonical("cuda") == "GPU"
    with pytest.raises(InvalidRequestError, match="CPU"):
        NOISE_SOURCES.get("mps")


def test_cpu_source_is_a_seeded_torch_cpu_generator() -> None:
    expected = torch.randn((3, 5), generator=torch.Generator("cpu").manual_seed(99))
    assert torch.equal(randn_local("cpu", 99, (3, 5)), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_gpu_source_without_cuda_says_what_to_use() -> None:
    with pytest.raises(InvalidRequestError, match="'NV'"):
        create_generator("GPU", 1)


def test_slerp_endpoints_on_orthogonal_vectors() -> None:
    low = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    high = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert torch.allclose(slerp(0.0, low, high), low, atol=1e-7)
    assert torch.allclose(slerp(1.0, low, high), high, atol=1e-7)
    mid = slerp(0.5, low, high)
    assert torch.allclose(mid.norm(dim=1), torch.ones(2))  # stays on the unit circle


def test_slerp_nearly_parallel_uses_linear_blend_with_reversed_weights() -> None:
    low = torch.tensor([[1.0, 2.0, 3.0]])
    high = low * 1.5  # cosine 1: the linear branch
    assert torch.allclose(slerp(0.25, low, high), 0.25 * low + 0.75 * high)


def test_slerp_works_along_the_height_axis_of_latents() -> None:
    gen = torch.Generator().manual_seed(0)
    low, high = torch.randn((4, 3, 5), generator=gen), torch.randn((4, 3, 5), generator=gen)
    out = slerp(0.5, low, high)
    # a spherical blend of two vectors per (channel, column): each column is a combination of its two inputs
    col_low, col_high, col_out = low[1, :, 2], high[1, :, 2], out[1, :, 2]
    coeffs = torch.linalg.lstsq(torch.stack([col_low, col_high], 1), col_out[:, None]).solution
    assert torch.allclose(coeffs[0], coeffs[1], atol=1e-5)  # val 0.5: equal weights


def test_paste_centered_smaller_source() -> None:
    target = torch.zeros((1, 4, 4))
    noise = torch.arange(1.0, 5.0).reshape(1, 2, 2)
    out = paste_centered(target, noise)
    assert torch.equal(out[0, 1:3, 1:3], noise[0])
    assert out.sum() == noise.sum()


def test_paste_centered_larger_source_with_odd_difference_leaves_a_row() -> None:
    target = torch.full((1, 4, 4), -1.0)
    noise = torch.arange(25.0).reshape(1, 5, 5)
    out = paste_centered(target, noise)
    # dy = dx = (4 - 5) // 2 = -1: a 3x3 window from (1, 1) lands at (0, 0); row and column 3 keep their values
    assert torch.equal(out[0, :3, :3], noise[0, 1:4, 1:4])
    assert (out[0, 3, :] == -1).all() and (out[0, :, 3] == -1).all()


def test_resize_noise_shape_uses_the_scale_factor() -> None:
    assert resize_noise_shape(SHAPE, 16, 8, 8) == (4, 1, 2)
    assert resize_noise_shape(SHAPE, 16, 8, 2) == (4, 4, 8)
    assert resize_noise_shape(SHAPE, 16, 0, 8) == SHAPE  # both sizes needed
    with pytest.raises(InvalidRequestError, match="latent cell"):
        resize_noise_shape(SHAPE, 4, 4, 8)


@pytest.mark.parametrize("source", ["CPU", "NV"])
def test_image_rng_one_generator_per_image(source: str) -> None:
    rng = ImageRNG(SHAPE, [10, 11], source=source)
    first, second = rng.next(), rng.next()
    assert first.shape == (2, *SHAPE) and first.dtype == torch.float32
    for i, seed in enumerate((10, 11)):
        gen = create_generator(source, seed)
        assert torch.equal(first[i], gen.randn(SHAPE))
        assert torch.equal(second[i], gen.randn(SHAPE))


def test_image_rng_ensd_reseeds_after_the_initial_noise() -> None:
    plain, shifted = ImageRNG(SHAPE, [5], source="NV"), ImageRNG(SHAPE, [5], source="NV", ensd=31337)
    assert torch.equal(plain.next(), shifted.next())
    assert torch.equal(shifted.next()[0], PhiloxGenerator(5 + 31337).randn(SHAPE))


def test_image_rng_variation_strength_endpoints() -> None:
    base = ImageRNG(SHAPE, [1], source="CPU").next()
    sub = randn_local("CPU", 2, SHAPE)
    assert torch.equal(ImageRNG(SHAPE, [1], subseeds=[2], subseed_strength=0.0, source="CPU").next(), base)
    full = ImageRNG(SHAPE, [1], subseeds=[2], subseed_strength=1.0, source="CPU").next()
    assert torch.allclose(full[0], sub, atol=1e-5)
    missing = ImageRNG(SHAPE, [1, 1], subseeds=[2], subseed_strength=1.0, source="CPU").next()
    assert torch.allclose(missing[1], randn_local("CPU", 0, SHAPE), atol=1e-5)  # missing subseed -> 0


def test_image_rng_seed_resize_pastes_small_noise_into_the_centre() -> None:
    rng = ImageRNG(SHAPE, [3], seed_resize_from_w=4, seed_resize_from_h=4, scale_factor=2, source="CPU")
    out = rng.next()[0]
    small = randn_local("CPU", 3, (4, 2, 2))
    around = randn_local("CPU", 3, SHAPE)
    assert torch.equal(out[:, 1:3, 2:4], small)
    mask = torch.ones(SHAPE, dtype=torch.bool)
    mask[:, 1:3, 2:4] = False
    assert torch.equal(out[mask], around[mask])


def test_image_rng_seed_resize_to_the_same_size_is_a_no_op() -> None:
    same = ImageRNG(SHAPE, [3], seed_resize_from_w=48, seed_resize_from_h=32, source="CPU")
    assert torch.equal(same.next(), ImageRNG(SHAPE, [3], source="CPU").next())


def test_image_rng_first_only_once() -> None:
    rng = ImageRNG(SHAPE, [1], source="CPU")
    rng.first()
    with pytest.raises(InvalidRequestError, match="new ImageRNG"):
        rng.first()


@pytest.mark.parametrize(
    "kwargs", [{"seeds": []}, {"subseed_strength": 1.5}, {"latent_shape": (4, 8)}, {"scale_factor": 0}]
)
def test_image_rng_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    args = {"latent_shape": SHAPE, "seeds": [1], "source": "CPU", **kwargs}
    with pytest.raises(InvalidRequestError):
        ImageRNG(args.pop("latent_shape"), args.pop("seeds"), **args)  # type: ignore[arg-type]


def test_resolve_seeds_rules() -> None:
    assert resolve_seeds(100, 7, 3, 0.0) == ((100, 101, 102), (7, 8, 9))
    assert resolve_seeds(100, 7, 3, 0.4) == ((100, 100, 100), (7, 8, 9))


def test_resolve_seeds_random_draws_seed_then_subseed() -> None:
    reference = random.Random(5)
    seed, subseed = reference.randrange(4294967294), reference.randrange(4294967294)
    assert resolve_seeds(-1, -1, 2, 0.0, random.Random(5)) == ((seed, seed + 1), (subseed, subseed + 1))


@pytest.mark.parametrize(("seed", "n"), [(-2, 1), (1, 0), (1.5, 1)])
def test_resolve_seeds_rejects_bad_input(seed: object, n: int) -> None:
    with pytest.raises(InvalidRequestError):
        resolve_seeds(seed, 1, n, 0.0)  # type: ignore[arg-type]


def test_seed_spec_validates_and_canonicalises() -> None:
    spec = SeedSpec(seed=9, subseed=4, subseed_strength=0.5, source="nv")
    assert spec.source == "NV" and SeedSpec().source == "GPU"
    assert spec.resolve(2) == ((9, 9), (4, 5))
    for bad in ({"subseed_strength": 2.0}, {"seed_resize_from_w": -8}, {"source": "tpu"}, {"seed": -3}):
        with pytest.raises(InvalidRequestError):
            SeedSpec(**bad)  # type: ignore[arg-type]


def test_image_rng_from_spec_matches_direct_construction() -> None:
    spec = SeedSpec(seed=1, subseed=2, subseed_strength=0.3, source="CPU", ensd=4)
    seeds, subseeds = spec.resolve(2)
    a = ImageRNG.from_spec(spec, SHAPE, seeds, subseeds)
    b = ImageRNG(SHAPE, seeds, subseeds=subseeds, subseed_strength=0.3, source="CPU", ensd=4)
    assert torch.equal(a.next(), b.next()) and torch.equal(a.next(), b.next())
