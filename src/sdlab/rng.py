"""A1111's initial and ancestral noise (``modules/rng.py`` behaviour, v1.10.1).

* Sources (:data:`NOISE_SOURCES`): "CPU" (torch CPU generator; same images on every machine), "GPU" (torch
  CUDA generator; needs CUDA) and "NV" (Philox imitation of NVIDIA's CUDA randn on any device).
* :class:`ImageRNG`: one generator per image seeded with that image's seed; variation seeds (``slerp``
  between seed and subseed noise), seed resize (noise of another image size pasted into the centre), eta
  noise seed delta (generators re-seeded with ``seed + ensd`` after the initial noise).
* :class:`SeedSpec` and :func:`resolve_seeds`: the seed settings of a request and A1111's seed rules.

Latent shapes are ``(C, H // f, W // f)`` with ``f`` the VAE scale factor (8 for SD; other values for tiny
models); seed-resize sizes are in pixels and divided by the same ``f``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry
from sdlab.rng_philox import PhiloxGenerator, check_seed

#: A1111's random seed range for seed -1: ``random.randrange(4294967294)``.
RANDOM_SEED_LIMIT = 4294967294
#: Above this mean cosine between the two noises, ``slerp`` interpolates linearly (A1111's threshold).
SLERP_LINEAR_THRESHOLD = 0.9995

Shape = tuple[int, ...]


class NoiseGenerator(Protocol):
    """A seeded stream of standard normals; every :meth:`randn` call is one draw."""

    def randn(self, shape: Sequence[int]) -> Tensor: ...


class TorchGenerator:
    """A torch ``Generator`` on ``device`` seeded with ``seed`` (A1111's CPU and GPU sources)."""

    def __init__(self, seed: int, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(check_seed(seed))

    def randn(self, shape: Sequence[int]) -> Tensor:
        """Standard normal float32 tensor of ``shape`` on the generator's device."""
        return torch.randn(tuple(int(s) for s in shape), generator=self.generator, device=self.device)


def _cpu_generator(seed: int) -> NoiseGenerator:
    return TorchGenerator(seed, "cpu")


def _cuda_generator(seed: int) -> NoiseGenerator:
    if not torch.cuda.is_available():
        raise InvalidRequestError(
            "RNG source 'GPU' needs a CUDA device and none is available; use 'NV' (the same noise as A1111's "
            "GPU source on NVIDIA cards, computed on any device) or 'CPU'"
        )
    return TorchGenerator(seed, "cuda")


def _nv_generator(seed: int) -> NoiseGenerator:
    return PhiloxGenerator(seed)


@dataclass(frozen=True)
class NoiseSource:
    """An RNG source: ``name`` as in A1111's "Random number generator source" option and infotext "RNG"."""

    name: str
    description: str
    create: Callable[[int], NoiseGenerator]


#: RNG sources by A1111 name ("CPU", "GPU", "NV"; case-insensitive; "cuda" and "philox" are aliases).
NOISE_SOURCES: Registry[NoiseSource] = Registry.of(
    "RNG source",
    (
        ("GPU", NoiseSource("GPU", "torch CUDA generator (A1111 default)", _cuda_generator)),
        ("CPU", NoiseSource("CPU", "torch CPU generator: the same noise on every machine", _cpu_generator)),
        ("NV", NoiseSource("NV", "Philox imitation of NVIDIA CUDA randn, on any device", _nv_generator)),
    ),
    (("cuda", "GPU"), ("philox", "NV")),
)


def create_generator(source: str, seed: int) -> NoiseGenerator:
    """A fresh generator of ``source`` seeded with ``seed`` (0 <= seed < 2^64)."""
    return NOISE_SOURCES.get(source).create(seed)


def randn_local(source: str, seed: int, shape: Sequence[int]) -> Tensor:
    """One draw of ``shape`` from a fresh generator (A1111 ``randn_local``; Brownian-tree noise uses it)."""
    return create_generator(source, seed).randn(shape)


def slerp(val: float, low: Tensor, high: Tensor) -> Tensor:
    """A1111's variation-seed blend of ``low`` (seed noise) and ``high`` (subseed noise), ``val`` in [0, 1].

    Vectors run along dim 1 (the H axis of a ``(C, H, W)`` latent). If the mean cosine of the vector pairs
    exceeds 0.9995 it returns ``low * val + high * (1 - val)`` (weights reversed with respect to the
    spherical branch, as in A1111); otherwise per vector ``sin((1-val) w)/sin w * low + sin(val w)/sin w *
    high`` with ``w = acos(cosine)``.
    """
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    cosine = (low_unit * high_unit).sum(1)
    if cosine.mean() > SLERP_LINEAR_THRESHOLD:
        return low * val + high * (1 - val)
    omega = torch.acos(cosine)
    sin_omega = torch.sin(omega)
    low_weight = (torch.sin((1.0 - val) * omega) / sin_omega).unsqueeze(1)
    high_weight = (torch.sin(val * omega) / sin_omega).unsqueeze(1)
    return low_weight * low + high_weight * high


def paste_centered(target: Tensor, noise: Tensor) -> Tensor:
    """Seed resize: copy the centre of ``noise`` ``(C, h, w)`` into the centre of ``target`` ``(C, H, W)``.

    Offsets use floor division: ``dx = (W - w) // 2``; a smaller source is pasted at ``(dy, dx)``, a larger
    one is cropped from ``(-dy, -dx)``. Modifies and returns ``target``.
    """
    dy = (target.shape[1] - noise.shape[1]) // 2
    dx = (target.shape[2] - noise.shape[2]) // 2
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    target[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
    return target


def _check_latent_shape(shape: Sequence[int]) -> Shape:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidRequestError(f"latent shape must be (channels, height, width) with sizes >= 1, got {shape}")
    return shape


def resize_noise_shape(latent_shape: Shape, resize_from_w: int, resize_from_h: int, scale_factor: int) -> Shape:
    """Shape of the noise drawn for seed resize: ``(C, h // f, w // f)``, or the latent shape when either
    size is 0 (seed resize off, as in A1111)."""
    if resize_from_w <= 0 or resize_from_h <= 0:
        return latent_shape
    shape = (latent_shape[0], int(resize_from_h) // scale_factor, int(resize_from_w) // scale_factor)
    if min(shape) < 1:
        raise InvalidRequestError(
            f"seed resize size {resize_from_w}x{resize_from_h} is smaller than one latent cell ({scale_factor} px)"
        )
    return shape


class ImageRNG:
    """Noise for one batch of images (A1111 ``ImageRNG``).

    ``latent_shape``: ``(C, H // f, W // f)`` of one image; ``seeds`` / ``subseeds``: per image (missing
    subseeds count as 0); ``subseed_strength`` in [0, 1] (0 = no variation); ``seed_resize_from_w/h`` in
    pixels (both > 0 to enable); ``scale_factor``: VAE factor f; ``source``: "CPU", "GPU" or "NV";
    ``ensd``: eta noise seed delta. Results are float32 ``(B, C, H // f, W // f)`` tensors on ``device``.
    :meth:`next` returns the initial noise on its first call and ancestral / SDE noise afterwards, so it
    can be handed to a sampler as its noise function.
    """

    def __init__(
        self,
        latent_shape: Sequence[int],
        seeds: Sequence[int],
        *,
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_w: int = 0,
        seed_resize_from_h: int = 0,
        scale_factor: int = 8,
        source: str = "GPU",
        ensd: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if not seeds:
            raise InvalidRequestError("ImageRNG needs at least one seed")
        if not 0.0 <= subseed_strength <= 1.0:
            raise InvalidRequestError(f"subseed_strength must lie in [0, 1], got {subseed_strength}")
        if scale_factor < 1:
            raise InvalidRequestError(f"scale_factor must be >= 1, got {scale_factor}")
        self.shape = _check_latent_shape(latent_shape)
        self.seeds = tuple(check_seed(s) for s in seeds)
        self.subseeds = None if subseeds is None else tuple(check_seed(s) for s in subseeds)
        self.subseed_strength = subseed_strength
        self.noise_shape = resize_noise_shape(self.shape, seed_resize_from_w, seed_resize_from_h, scale_factor)
        self.source = NOISE_SOURCES.get(source)
        self.ensd = int(ensd)
        self.device = torch.device(device)
        self.generators = [self.source.create(s) for s in self.seeds]
        self.started = False

    @classmethod
    def from_spec(
        cls,
        spec: SeedSpec,
        latent_shape: Sequence[int],
        seeds: Sequence[int],
        subseeds: Sequence[int] | None,
        *,
        scale_factor: int = 8,
        device: torch.device | str = "cpu",
    ) -> ImageRNG:
        """An ImageRNG for resolved per-image ``seeds`` / ``subseeds`` with the settings of ``spec``."""
        return cls(
            latent_shape,
            seeds,
            subseeds=subseeds,
            subseed_strength=spec.subseed_strength,
            seed_resize_from_w=spec.seed_resize_from_w,
            seed_resize_from_h=spec.seed_resize_from_h,
            scale_factor=scale_factor,
            source=spec.source,
            ensd=spec.ensd,
            device=device,
        )

    def _fresh(self, seed: int, shape: Shape) -> Tensor:
        return self.source.create(seed).randn(shape)

    def _image_noise(self, i: int) -> Tensor:
        seed, generator = self.seeds[i], self.generators[i]
        resized = self.noise_shape != self.shape
        noise = self._fresh(seed, self.noise_shape) if resized else generator.randn(self.shape)
        if self.subseeds is not None and self.subseed_strength != 0:
            subseed = self.subseeds[i] if i < len(self.subseeds) else 0
            subnoise = self._fresh(subseed, self.noise_shape)
            noise = slerp(self.subseed_strength, noise.to(subnoise.device), subnoise)
        if resized:
            base = generator.randn(self.shape)
            noise = paste_centered(base, noise.to(base.device))
        return noise.to(self.device)

    def first(self) -> Tensor:
        """The initial noise ``(B, C, H, W)``; then switches to ``seed + ensd`` generators if ensd != 0."""
        if self.started:
            raise InvalidRequestError("ImageRNG.first() was already called; make a new ImageRNG for new noise")
        self.started = True
        noise = torch.stack([self._image_noise(i) for i in range(len(self.seeds))])
        if self.ensd:
            self.generators = [self.source.create(s + self.ensd) for s in self.seeds]
        return noise

    def next(self) -> Tensor:
        """The initial noise on the first call, then one fresh ``(B, C, H, W)`` draw per image generator."""
        if not self.started:
            return self.first()
        return torch.stack([g.randn(self.shape).to(self.device) for g in self.generators])


def _check_seed_setting(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise InvalidRequestError(f"{name} must be an integer >= 0, or -1 for a random one; got {value!r}")


@dataclass(frozen=True)
class SeedSpec:
    """The noise settings of a request (A1111 names in brackets).

    ``seed`` / ``subseed``: -1 = random [Seed, Variation seed]; ``subseed_strength`` in [0, 1] [Variation
    strength]; ``seed_resize_from_w/h``: pixels, 0 = off [Seed resize from]; ``source``: "GPU" (A1111's
    default), "CPU" or "NV" [RNG]; ``ensd``: eta noise seed delta [ENSD].
    """

    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    source: str = "GPU"
    ensd: int = 0

    def __post_init__(self) -> None:
        _check_seed_setting("seed", self.seed)
        _check_seed_setting("subseed", self.subseed)
        if not isinstance(self.subseed_strength, (int, float)) or not 0.0 <= self.subseed_strength <= 1.0:
            raise InvalidRequestError(f"subseed_strength must lie in [0, 1], got {self.subseed_strength!r}")
        for name in ("seed_resize_from_w", "seed_resize_from_h"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequestError(f"{name} must be an integer >= 0 (pixels; 0 = off), got {value!r}")
        if isinstance(self.ensd, bool) or not isinstance(self.ensd, int):
            raise InvalidRequestError(f"ensd must be an integer, got {self.ensd!r}")
        object.__setattr__(self, "source", NOISE_SOURCES.canonical(self.source))

    def resolve(self, n_images: int, rng: random.Random | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-image ``(seeds, subseeds)`` for ``n_images`` images (see :func:`resolve_seeds`)."""
        return resolve_seeds(self.seed, self.subseed, n_images, self.subseed_strength, rng)


def resolve_seeds(
    seed: int, subseed: int, n_images: int, subseed_strength: float, rng: random.Random | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A1111's seed rules for ``n_images`` images (batch count x batch size).

    -1 draws ``rng.randrange(4294967294)`` (seed first, then subseed; a fresh ``random.Random()`` when
    ``rng`` is None). Image i gets ``seed + i`` when ``subseed_strength == 0``, else ``seed``; its subseed
    is always ``subseed + i``.
    """
    _check_seed_setting("seed", seed)
    _check_seed_setting("subseed", subseed)
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise InvalidRequestError(f"n_images must be an integer >= 1, got {n_images!r}")
    rng = rng if rng is not None else random.Random()
    seed = rng.randrange(RANDOM_SEED_LIMIT) if seed == -1 else seed
    subseed = rng.randrange(RANDOM_SEED_LIMIT) if subseed == -1 else subseed
    seeds = tuple(seed + (i if subseed_strength == 0 else 0) for i in range(n_images))
    return seeds, tuple(subseed + i for i in range(n_images))
