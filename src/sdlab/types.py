"""Typed, immutable requests and results (the bottom layer: imports nothing of sdlab but errors).

A request is checked once, in :func:`sdlab.pipeline.plan.plan_request`; the dataclasses here only hold
values and do cheap type normalisation. Field names follow A1111's processing fields where one exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class LoraRef:
    """A LoRA / LyCORIS network to apply for one request (A1111 ``<lora:name:te:unet:dyn>``).

    ``unet_multiplier`` None means "same as ``te_multiplier``"; ``dyn_dim`` None means full rank.
    """

    name: str
    te_multiplier: float = 1.0
    unet_multiplier: float | None = None
    dyn_dim: int | None = None


@dataclass(frozen=True)
class HiresFix:
    """A1111's txt2img "Hires. fix": a second, img2img-like pass at a larger size.

    ``scale`` (> 0) multiplies the first-pass size unless ``resize_x`` / ``resize_y`` (pixels, 0 = unset)
    are given; ``upscaler``: a latent mode ("Latent", "Latent (antialiased)", "Latent (bicubic)",
    "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)") or an image upscaler
    ("Lanczos", "Nearest", model upscalers); ``second_pass_steps`` 0 = the first pass's steps;
    ``denoising_strength`` in [0, 1]; ``prompt`` / ``negative_prompt`` "" = the first pass's; ``sampler`` /
    ``schedule_type`` None = the first pass's.
    """

    scale: float = 2.0
    upscaler: str = "Latent"
    second_pass_steps: int = 0
    resize_x: int = 0
    resize_y: int = 0
    denoising_strength: float = 0.7
    prompt: str = ""
    negative_prompt: str = ""
    sampler: str | None = None
    schedule_type: str | None = None


@dataclass(frozen=True)
class RefinerSpec:
    """An SDXL refiner checkpoint switched in once ``switch_at`` (0..1) of the model timesteps are done;
    ``by_sampling_steps``: of the pass's denoiser calls instead (A1111's "Switch to refiner by sampling
    steps" option, its behaviour before v1.7)."""

    checkpoint: str
    switch_at: float = 0.8
    by_sampling_steps: bool = False


@dataclass(frozen=True)
class PostSteps:
    """Steps after decoding, per image: face restoration (A1111's "Restore faces") then an upscale
    (A1111's extras). ``face_restoration``: "GFPGAN" or "CodeFormer" (None: off); ``visibility`` and
    ``codeformer_weight`` in [0, 1]; ``upscaler``: Lanczos, Nearest or a model name (None: off);
    ``upscale_by`` > 0; ``allow_noncommercial``: needed for CodeFormer (its licence is not sdlab's)."""

    face_restoration: str | None = None
    visibility: float = 1.0
    codeformer_weight: float = 0.5
    upscaler: str | None = None
    upscale_by: float = 2.0
    allow_noncommercial: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that decides a txt2img generation (A1111 v1.10.1 defaults).

    Sizes are in pixels (multiples of 8; None = the model's native size: 512 for SD 1.x, 768 for SD 2.x
    v-prediction, 1024 for SDXL, 64 for the embedded default model), ``steps`` >= 1, ``cfg_scale`` >= 1 (1 disables the
    unconditional pass only where A1111 does), ``seed`` -1 means random. ``batch_size`` images are made
    per sampler run, ``n_iter`` runs in a row (A1111's batch count); image k gets seed + k.

    img2img (``init_images`` non-empty; one image for the whole batch, or up to ``batch_size`` images):
    ``denoising_strength`` in [0, 1], ``resize_mode`` ("Just resize", "Crop and resize", "Resize and fill",
    "Just resize (latent upscale)"), ``initial_noise_multiplier`` (A1111 default 1.0), ``img2img_fix_steps``
    (A1111's option: run the full ``steps`` instead of ``steps * strength``). Sizes default to the init
    image's size rounded down to a multiple of 8.
    Inpainting (``mask`` given, or ``mask_from_alpha``: transparent pixels of the init image are repainted):
    white = repaint; ``mask_blur`` (pixels, Gaussian sigma), ``inpainting_mask_invert``, ``inpainting_fill``
    ("fill", "original", "latent noise", "latent nothing"), ``inpaint_area`` ("Whole picture",
    "Only masked"), ``inpaint_full_res_padding`` (pixels), ``inpainting_mask_weight`` (0..1, inpainting
    models' conditioning mask weight). ``image_cfg_scale``: instruct-pix2pix img2img's "Image CFG scale"
    (A1111's UI: 0..3, default 1.5; None or 1 = plain CFG, the init image conditioning both passes).
    ``hires``: txt2img hires fix; ``refiner``: SDXL refiner.
    """

    prompt: str = ""
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "DPM++ 2M"
    schedule_type: str = "Automatic"
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    emphasis: str = "Original"
    comma_padding_backtrack: int = 20
    rng: str = "GPU"
    eta_noise_seed_delta: int = 0
    eta: float | None = None
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None
    model: str | None = None
    vae: str | None = None
    loras: tuple[LoraRef, ...] = ()
    original_size: tuple[int, int] | None = None
    target_size: tuple[int, int] | None = None
    crops_coords_top_left: tuple[int, int] = (0, 0)
    init_images: tuple[Image, ...] = ()
    denoising_strength: float = 0.75
    resize_mode: str = "Just resize"
    initial_noise_multiplier: float = 1.0
    img2img_fix_steps: bool = False
    mask: Image | None = None
    mask_from_alpha: bool = False
    mask_blur: int = 4
    inpainting_mask_invert: bool = False
    inpainting_fill: str = "original"
    inpaint_area: str = "Whole picture"
    inpaint_full_res_padding: int = 32
    inpainting_mask_weight: float = 1.0
    image_cfg_scale: float | None = None
    hires: HiresFix | None = None
    refiner: RefinerSpec | None = None
    post: PostSteps | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.loras, tuple):
            object.__setattr__(self, "loras", tuple(self.loras))
        if not isinstance(self.init_images, tuple):
            object.__setattr__(self, "init_images", tuple(self.init_images))

    @property
    def is_img2img(self) -> bool:
        """True when init images are given."""
        return bool(self.init_images)

    @property
    def is_inpaint(self) -> bool:
        """True when a mask is given (or taken from the init image's alpha)."""
        return self.mask is not None or self.mask_from_alpha

    def replace(self, **changes: Any) -> GenerationRequest:
        """A copy with ``changes`` applied (unknown names raise TypeError)."""
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all request fields."""
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class ProgressEvent:
    """One sampler step done: ``step`` of ``total_steps`` (1-based) in run ``iteration`` of ``n_iter``."""

    step: int
    total_steps: int
    iteration: int
    n_iter: int
    sigma: float


@dataclass(frozen=True)
class GeneratedImage:
    """One output image with the seed that made it and its A1111 infotext."""

    image: Image
    seed: int
    subseed: int
    infotext: str
    index: int


@dataclass(frozen=True)
class GenerationResult:
    """The images of one request, in order, plus facts about the run."""

    images: tuple[GeneratedImage, ...]
    request: GenerationRequest
    model_name: str
    timings: Mapping[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]
