"""Load checkpoints fully offline into diffusers / transformers modules.

Configs come from tensor shapes plus the bundled family templates (:mod:`sdlab.models.derive`), keys
are converted by diffusers' single-file conversion functions, and modules are created on the meta
device and filled with the converted tensors (``assign=True``), so no second full copy of the
weights is ever held. Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from sdlab.errors import UnsupportedModelError
from sdlab.models.derive import ModelConfigs, derive_configs, derive_vae_config, load_template, strip_prefix
from sdlab.models.detect import Detection, detect, detect_header, read_sidecar_yaml, resolve_prediction
from sdlab.models.families import FAMILIES, UNET_PREFIX, VAE_PREFIX, Family, TextEncoderSpec
from sdlab.models.files import FileHashes, HashCache, as_dtype, open_state_dict, read_header

Tensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A loaded checkpoint: modules plus the facts a pipeline needs.

    ``text_encoders``: SD1/SD2 ``(CLIPTextModel,)``; SDXL ``(CLIPTextModel, CLIPTextModelWithProjection)``;
    SDXL refiner ``(CLIPTextModelWithProjection,)``. ``vae_scale_factor``: pixels per latent (8 standard).
    ``latent_scaling_factor``: 0.18215 (SD1/SD2) or 0.13025 (SDXL). ``alphas_cumprod``: float32, 1000
    training steps (A1111's). ``hashes``: of the checkpoint file (None for diffusers folders).
    """

    detection: Detection
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: tuple[torch.nn.Module, ...]
    configs: ModelConfigs
    vae_scale_factor: int
    latent_channels: int
    latent_scaling_factor: float
    alphas_cumprod: torch.Tensor
    prediction_type: str
    path: Path
    hashes: FileHashes | None = None
    vae_path: Path | None = None

    @property
    def family(self) -> str:
        """The detected family name (``sd1``, ``sd2``, ``sdxl``, ``sdxl-refiner``)."""
        return self.detection.family


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """LDM ``scaled_linear`` schedule: cumprod(1 - linspace(sqrt(b0), sqrt(b1))^2), float64 then float32."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


# --------------------------------------------------------------------------------------------------
# building modules without a second copy


def _fill(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, dtype: torch.dtype) -> torch.nn.Module:
    """Assign ``state`` (converted to ``dtype`` tensor by tensor) into a meta-initialised module."""
    for k in list(state):
        state[k] = _aligned(state[k], dtype)
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise UnsupportedModelError(
            f"{what}: the checkpoint does not fit the derived architecture; "
            f"missing {len(missing)} {missing[:3]}, unexpected {len(unexpected)} {unexpected[:3]}"
        )
    module.load_state_dict(state, strict=True, assign=True)
    state.clear()
    return module.eval().requires_grad_(False)


def _aligned(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``v`` as ``dtype`` (floating point only) in contiguous, 64-byte aligned memory (a no-op for what
    :func:`sdlab.models.files.read_tensor` returned in that dtype).

    Tensors from a mapped file can sit at unaligned addresses, where CPU kernels take other code paths and
    round differently; a fresh copy computes bit-for-bit like a model built in memory.
    """
    out = v.to(dtype) if v.is_floating_point() else v
    if not out.is_contiguous() or out.data_ptr() % 64:
        out = out.contiguous() if not out.is_contiguous() else out.clone()
    return out


def _empty(factory: Any) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory()


def build_unet(state: dict[str, torch.Tensor], config: Mapping[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    """UNet2DConditionModel from a diffusers-named state dict (consumed)."""
    from diffusers import UNet2DConditionModel

    return _fill(_empty(lambda: UNet2DConditionModel.from_config(dict(config))), state, "UNet", dtype)


def build_vae(state: dict[str, torch.Tensor], config: Mapping[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    """AutoencoderKL from a diffusers-named state dict (consumed)."""
    from diffusers import AutoencoderKL

    return _fill(_empty(lambda: AutoencoderKL.from_config(dict(config))), state, "VAE", dtype)


def clip_config(config: Mapping[str, Any]) -> Any:
    """transformers CLIPTextConfig from a plain dict."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig.from_dict({k: v for k, v in config.items() if k != "architectures"})


def empty_text_encoder(config: Mapping[str, Any], with_projection: bool) -> torch.nn.Module:
    """A meta-initialised CLIPTextModel (or ...WithProjection) of ``config``."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return _empty(lambda: cls(clip_config(config)))


# --------------------------------------------------------------------------------------------------
# text encoders


def _text_encoder_state(
    sd: Tensors, spec: TextEncoderSpec, model: torch.nn.Module, layers: int
) -> dict[str, torch.Tensor]:
    """Diffusers-named state of one text encoder, via diffusers' converters."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    if spec.layout == "openclip":
        state = convert_open_clip_checkpoint(model, sd, prefix=spec.prefix)
    else:
        only = _Subset(sd, spec.prefix)
        state = {k if k.startswith("text_model.") else f"text_model.{k}": v
                 for k, v in convert_ldm_clip_checkpoint(only, remove_prefix=spec.prefix).items()}  # fmt: skip
    keep = re.compile(r"(text_model\.)?encoder\.layers\.(\d+)\.")
    state = {k: v for k, v in state.items()
             if not ((m := keep.match(k)) and int(m.group(2)) >= layers) and "position_ids" not in k}  # fmt: skip
    if not spec.with_projection:
        state.pop("text_projection.weight", None)
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattens CLIPTextModel
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    return state


class _Subset(Mapping[str, torch.Tensor]):
    """The keys of a lazy state dict under one prefix (so converters never touch the other keys)."""

    def __init__(self, sd: Tensors, prefix: str | tuple[str, ...]) -> None:
        self._sd, self._names = sd, tuple(k for k in sd if k.startswith(prefix))
        self._keys = frozenset(self._names)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self._sd[key]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._keys)


def load_text_encoders(
    sd: Tensors, family: Family, configs: tuple[dict[str, Any], ...], dtype: torch.dtype
) -> tuple[torch.nn.Module, ...]:
    """All text encoders of a single-file checkpoint of ``family``."""
    out = []
    for spec, cfg in zip(family.text_encoders, configs):
        model = empty_text_encoder(cfg, spec.with_projection)
        state = _text_encoder_state(sd, spec, model, int(cfg["num_hidden_layers"]))
        out.append(_fill(model, state, f"text encoder {spec.prefix}", dtype))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# VAE files


def vae_layout(names: list[str] | tuple[str, ...]) -> str:
    """``"diffusers"`` (``encoder.down_blocks.*``), ``"ldm"`` (``encoder.down.*``) or raise."""
    if any(".down_blocks." in n for n in names):
        return "diffusers"
    if any(re.search(r"encoder\.down\.\d+\.", n) for n in names):
        return "ldm"
    raise UnsupportedModelError(f"no VAE encoder found among {len(names)} keys; not a VAE file")


def _ldm_vae_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """LDM-named VAE shapes from a file in either layout, prefix removed."""
    from sdlab.models.convert import vae_to_ldm

    if vae_layout(tuple(shapes)) == "ldm":
        prefix = VAE_PREFIX if any(k.startswith(VAE_PREFIX) for k in shapes) else ""
        return strip_prefix(shapes, prefix)
    levels = len({k.split(".")[2] for k in shapes if k.startswith("encoder.down_blocks.")})
    return {k: tuple(v.shape) for k, v in vae_to_ldm(_meta(shapes), {"block_out_channels": [0] * levels}).items()}


def _meta(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def _vae_state(sd: Tensors, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    names = tuple(sd)
    if vae_layout(names) == "diffusers":
        return {k: sd[k] for k in names}
    prefix = VAE_PREFIX if any(k.startswith(VAE_PREFIX) for k in names) else ""
    wanted = tuple(prefix + p for p in ("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))
    return convert_ldm_vae_checkpoint(_Subset(sd, wanted), dict(config))  # type: ignore[arg-type]


def load_vae(path: str | os.PathLike[str], *, family: str = "sd1", device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> torch.nn.Module:  # fmt: skip
    """An external VAE file (A1111 ``.pt``/``.safetensors``, with or without ``first_stage_model.``, or
    diffusers-named) as an AutoencoderKL; ``family`` supplies the template (scaling factor...)."""
    header = read_header(path)
    config = derive_vae_config(_ldm_vae_shapes(header.shapes()), load_template(FAMILIES.canonical(family), "vae"))
    return build_vae(_vae_state(as_dtype(open_state_dict(path), dtype), config), config, dtype).to(device)


# --------------------------------------------------------------------------------------------------
# checkpoints


def _load_unet(sd: Tensors, config: Mapping[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return build_unet(convert_ldm_unet_checkpoint(_Subset(sd, UNET_PREFIX), dict(config)), config, dtype)


def _finish(detection: Detection, unet: torch.nn.Module, dtype: torch.dtype, device: Any) -> tuple:
    """Decide an open prediction type on the float32 CPU UNet (as A1111), then cast and move."""
    detection = resolve_prediction(detection, unet)
    return detection, torch.nn.Module.to(unet, device=device, dtype=dtype)


def hash_in_background(cache: HashCache, path: Path) -> Future[FileHashes]:
    """Start hashing ``path`` on its own thread (hashlib releases the GIL), to overlap the load.

    The thread is not joined on error: it finishes reading the file and fills ``cache``, nothing more.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdlab-hash")
    try:
        return pool.submit(cache.hashes, path)
    finally:
        pool.shutdown(wait=False)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_path: str | os.PathLike[str] | None = None,
    hash_cache: HashCache | None = None,
) -> LoadedModel:
    """Load a single-file checkpoint (or a diffusers folder) fully offline.

    ``vae_path``: an external VAE replacing the checkpoint's. ``hash_cache``: reuse cached hashes
    (the full SHA-256 of the file is computed otherwise).
    """
    p = Path(path)
    if p.is_dir():
        return load_diffusers_folder(p, device=device, dtype=dtype, vae_path=vae_path)
    header = read_header(p)
    detection = detect_header(header, read_sidecar_yaml(p))
    family = FAMILIES.get(detection.family)
    shapes = header.shapes()
    vae_shapes = _ldm_vae_shapes(read_header(vae_path).shapes()) if vae_path else strip_prefix(shapes, VAE_PREFIX)
    if not vae_shapes:
        raise UnsupportedModelError(f"{p}: the checkpoint has no VAE (first_stage_model.*); pass a VAE file")
    configs = derive_configs(shapes, family, UNET_PREFIX, VAE_PREFIX, vae_shapes=vae_shapes)
    # the file is a checkpoint (detection passed): hash it beside the load
    hashing = hash_in_background(hash_cache if hash_cache is not None else HashCache(), p)
    sd = open_state_dict(p)
    unet_dtype = torch.float32 if detection.prediction_type is None else dtype
    detection, unet = _finish(detection, _load_unet(as_dtype(sd, unet_dtype), configs.unet, unet_dtype), dtype, device)
    vae_sd = as_dtype(open_state_dict(vae_path) if vae_path else sd, dtype)
    vae = build_vae(_vae_state(vae_sd, configs.vae), configs.vae, dtype).to(device)
    texts = tuple(m.to(device) for m in load_text_encoders(as_dtype(sd, dtype), family, configs.text_encoders, dtype))
    del sd, vae_sd
    hashes = hashing.result()
    return _loaded(detection, unet, vae, texts, configs, family, p, hashes, Path(vae_path) if vae_path else None)


def _loaded(detection: Detection, unet: Any, vae: Any, texts: tuple, configs: ModelConfigs, family: Family,
            path: Path, hashes: FileHashes | None, vae_path: Path | None) -> LoadedModel:  # fmt: skip
    return LoadedModel(
        detection=detection,
        unet=unet,
        vae=vae,
        text_encoders=texts,
        configs=configs,
        vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
        latent_channels=int(vae.config.latent_channels),
        latent_scaling_factor=family.latent_scale,
        alphas_cumprod=sd_alphas_cumprod(),
        prediction_type=str(detection.prediction_type),
        path=path,
        hashes=hashes,
        vae_path=vae_path,
    )


def load_diffusers_folder(
    folder: Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    vae_path: str | os.PathLike[str] | None = None,
) -> LoadedModel:  # fmt: skip
    """A local diffusers-format folder (``model_index.json`` + component folders), never the hub."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    detection = detect(folder)
    family = FAMILIES.get(detection.family)
    kw: dict[str, Any] = {"local_files_only": True, "torch_dtype": dtype}
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
    vae = load_vae(vae_path, family=family.name, dtype=dtype) if vae_path else (
        AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw))  # fmt: skip
    texts = tuple(
        (CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel).from_pretrained(
            folder / spec.name, local_files_only=True, dtype=dtype
        )
        for spec in family.text_encoders
    )
    configs = ModelConfigs(dict(unet.config), dict(vae.config), tuple(t.config.to_dict() for t in texts))
    modules = [m.to(device).eval().requires_grad_(False) for m in (unet, vae, *texts)]
    vp = Path(vae_path) if vae_path else None
    return _loaded(detection, modules[0], modules[1], tuple(modules[2:]), configs, family, folder, None, vp)


def with_detection(model: LoadedModel, detection: Detection) -> LoadedModel:
    """A copy of ``model`` with another detection (e.g. a user override of the prediction type)."""
    return replace(model, detection=detection, prediction_type=str(detection.prediction_type))
