"""Performance and memory knobs, applied once to a freshly loaded model (never changing which image comes out
beyond the tolerance each knob states).

* ``attention``: ``sdpa`` (default; torch ``scaled_dot_product_attention``), ``sliced`` (diffusers attention
  slicing: lower peak memory, about 1.9x slower on CPU), ``classic`` (explicit softmax(QK^T)V).
* ``channels_last``: UNet and VAE weights in NHWC memory format (no speed-up measured on CPU).
* ``vae_dtype``: ``auto`` keeps the VAE in float32 when the model runs in fp16 on SDXL (A1111
  ``--no-half-vae``: the SDXL VAE overflows to NaN in fp16); ``fp32`` always; ``model`` never.
* ``vae_slicing`` / ``vae_tiling`` / ``vae_tile_size``: sdlab already decodes one image at a time, so slicing
  only changes batched VAE *encodes*; tiling decodes in ``vae_tile_size``-pixel tiles (overlap 1/4, blended
  seams) so large images decode within bounded memory. The tile size must be below the image size to tile.
* ``offload``: ``model`` (one of text encoder / UNet / VAE on the GPU at a time) or ``sequential`` (each
  leaf layer moved to the GPU for its own call); GPU only: on CPU the weights already live in RAM, so asking
  for offload raises :class:`~sdlab.errors.InvalidRequestError`.
* ``compile_unet``: ``torch.compile`` of the UNet's forward; the first call's time (which includes tracing
  and code generation) is reported as ``timings["compile"]`` by the engine.
* ``max_cache_bytes``: the engine's model cache keeps at most this many bytes of weights (LRU).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sdlab.errors import InvalidRequestError
from sdlab.models.load import LoadedModel
from sdlab.registry import Registry

AttentionSetter = Callable[[torch.nn.Module, "PerfSettings"], None]


def _set_processor(module: torch.nn.Module, processor: Any) -> None:
    if hasattr(module, "set_attn_processor") and getattr(module, "attn_processors", None):
        module.set_attn_processor(processor)


def _sdpa(module: torch.nn.Module, settings: PerfSettings) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    _set_processor(module, AttnProcessor2_0())


def _classic(module: torch.nn.Module, settings: PerfSettings) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    _set_processor(module, AttnProcessor())


def _sliced(module: torch.nn.Module, settings: PerfSettings) -> None:
    if hasattr(module, "set_attention_slice"):
        size = settings.attention_slice_size
        heads = [int(m.sliceable_head_dim) for m in module.modules() if hasattr(m, "sliceable_head_dim")]
        if size == "auto" and heads and min(heads) < 2:  # diffusers' "auto" (heads // 2) would be 0
            size = "max"
        module.set_attention_slice(size)
    else:  # the VAE's one single-head attention has nothing to slice: keep SDPA there
        _sdpa(module, settings)


ATTENTION: Registry[AttentionSetter] = Registry.of(
    "attention", (("sdpa", _sdpa), ("sliced", _sliced), ("classic", _classic)),
    aliases=(("default", "sdpa"), ("slicing", "sliced"), ("vanilla", "classic")),
)
OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential")
VAE_DTYPES: tuple[str, ...] = ("auto", "fp32", "model")


@dataclass(frozen=True)
class PerfSettings:
    """Knobs applied at model load (see the module docstring). Defaults reproduce plain sdlab."""

    attention: str = "sdpa"
    attention_slice_size: int | str = "auto"
    channels_last: bool = False
    vae_dtype: str = "auto"
    vae_slicing: bool = False
    vae_tiling: bool = False
    vae_tile_size: int = 512
    offload: str = "none"
    compile_unet: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    max_cache_bytes: int | None = None

    def __post_init__(self) -> None:
        ATTENTION.get(self.attention)
        checks = (
            (self.offload in OFFLOAD_MODES, f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}"),
            (self.vae_dtype in VAE_DTYPES, f"vae_dtype must be one of {', '.join(VAE_DTYPES)}, got {self.vae_dtype!r}"),
            (self.vae_tile_size >= 64 and self.vae_tile_size % 8 == 0,
             f"vae_tile_size is in pixels, a multiple of 8 and at least 64; got {self.vae_tile_size}"),
            (self.max_cache_bytes is None or self.max_cache_bytes > 0,
             f"max_cache_bytes must be positive, got {self.max_cache_bytes}"),
            (self.attention_slice_size in ("auto", "max") or (isinstance(self.attention_slice_size, int)
                                                               and self.attention_slice_size > 0),
             f"attention_slice_size must be 'auto', 'max' or a positive int, got {self.attention_slice_size!r}"),
        )
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)

    def check_device(self, device: torch.device) -> None:
        """Raise InvalidRequestError for knobs that need another device (offload needs CUDA)."""
        if self.offload != "none" and device.type != "cuda":
            raise InvalidRequestError(
                f"{self.offload} CPU offload moves weights between RAM and a GPU; device {device.type!r} already "
                "keeps them in RAM. Use --offload none (the default) on CPU"
            )


def vae_keeps_fp32(settings: PerfSettings, family: str, dtype: torch.dtype) -> bool:
    """Whether the VAE stays float32 while the rest runs in ``dtype`` (A1111 ``--no-half-vae``)."""
    if settings.vae_dtype == "fp32":
        return dtype != torch.float32
    return settings.vae_dtype == "auto" and dtype == torch.float16 and family.startswith("sdxl")


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def model_bytes(model: LoadedModel) -> int:
    """Bytes of weights of a loaded model (UNet + VAE + text encoders)."""
    return sum(module_bytes(m) for m in (model.unet, model.vae, *model.text_encoders))


@dataclass
class FirstCallClock:
    """Seconds of a module's first call (for a compiled module: tracing + code generation + one call)."""

    seconds: float | None = None
    reported: bool = False
    _start: float = 0.0
    _handles: list[Any] = field(default_factory=list, repr=False)

    def attach(self, module: torch.nn.Module) -> None:
        """Time the next call of ``module`` once, then detach."""
        self._handles = [module.register_forward_pre_hook(self._pre),
                         module.register_forward_hook(self._post, always_call=True)]

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        self._start = time.perf_counter()

    def _post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.seconds = time.perf_counter() - self._start
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def take(self) -> float | None:
        """The measured seconds the first time they are available, else None."""
        if self.seconds is None or self.reported:
            return None
        self.reported = True
        return self.seconds


def configure_vae(vae: torch.nn.Module, settings: PerfSettings, scale_factor: int) -> None:
    """Slicing and tiling flags on a diffusers AutoencoderKL (tile size in pixels)."""
    if settings.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if settings.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
        vae.tile_sample_min_size = settings.vae_tile_size
        vae.tile_latent_min_size = settings.vae_tile_size // scale_factor


def _offload_model(model: LoadedModel, device: torch.device) -> None:
    """Keep one group (text encoder / UNet / VAE half) on ``device`` at a time; the rest in RAM."""
    groups: list[tuple[torch.nn.Module, ...]] = [(te,) for te in model.text_encoders] + [(model.unet,)]
    vae = model.vae
    groups += [tuple(m for m in (getattr(vae, "quant_conv", None), vae.encoder) if m is not None),
               tuple(m for m in (getattr(vae, "post_quant_conv", None), vae.decoder) if m is not None)]
    resident: list[tuple[torch.nn.Module, ...]] = []

    def bring(group: tuple[torch.nn.Module, ...]) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any) -> None:
            if resident and resident[0] is group:
                return
            for m in resident[0] if resident else ():
                m.to("cpu")
            for m in group:
                m.to(device)
            resident[:] = [group]
        return hook

    for group in groups:
        for module in group:
            module.to("cpu").register_forward_pre_hook(bring(group))


def _offload_sequential(model: LoadedModel, device: torch.device) -> None:
    """Move each leaf layer's weights to ``device`` just for its call (lowest memory, slowest)."""
    def pre(module: torch.nn.Module, args: Any) -> None:
        module.to(device)

    def post(module: torch.nn.Module, args: Any, output: Any) -> None:
        module.to("cpu")

    for root in (model.unet, model.vae, *model.text_encoders):
        for module in root.modules():
            if next(module.children(), None) is None and any(True for _ in module.parameters(recurse=False)):
                module.to("cpu")
                module.register_forward_pre_hook(pre)
                module.register_forward_hook(post)


OFFLOADERS: Registry[Callable[[LoadedModel, torch.device], None]] = Registry.of(
    "offload mode", (("model", _offload_model), ("sequential", _offload_sequential)))


def apply_perf(model: LoadedModel, settings: PerfSettings, device: torch.device, dtype: torch.dtype) -> FirstCallClock | None:
    """Apply ``settings`` to ``model`` in place; returns the compile clock when the UNet is compiled."""
    settings.check_device(device)
    if vae_keeps_fp32(settings, model.family, dtype):
        model.vae.to(torch.float32)
    setter = ATTENTION.get(settings.attention)
    for module in (model.unet, model.vae):
        setter(module, settings)
    if settings.channels_last:
        for module in (model.unet, model.vae):
            module.to(memory_format=torch.channels_last)
    configure_vae(model.vae, settings, model.vae_scale_factor)
    if settings.offload != "none":
        OFFLOADERS.get(settings.offload)(model, device)
    if not settings.compile_unet:
        return None
    unet = model.unet
    unet.forward = torch.compile(unet.forward, mode=settings.compile_mode,
                                 backend=settings.compile_backend)  # type: ignore[method-assign]
    clock = FirstCallClock()
    clock.attach(unet)
    return clock
