"""The Engine: the one explicit piece of mutable state (device, dtype, model cache, text caches).

``Engine.generate(request)`` plans the request (all validation), loads or reuses the checkpoint, runs the
txt2img pass and returns a :class:`~sdlab.types.GenerationResult`. Nothing is downloaded, ever.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.infotext import infotext_to_request_fields, parse_infotext
from sdlab.models.adapters.apply import applied_to_model
from sdlab.models.adapters.embeddings import EmbeddingLookup, lookup_for_folder, model_widths
from sdlab.models.files import HashCache, read_header
from sdlab.models.listing import CheckpointInfo, list_checkpoints
from sdlab.models.load import LoadedModel, load_checkpoint
from sdlab.models.paths import ModelsDir, choose_models_dir, hash_store_path, list_models, resolve_model
from sdlab.outputs import SavedImage, read_infotext, save_image
from sdlab.pipeline.hires import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES
from sdlab.pipeline.img2img import img2img
from sdlab.pipeline.postprocess import apply_post_steps, prepare_post
from sdlab.pipeline.networks import folder_signature, prepare_networks, relink_lora_tags
from sdlab.pipeline.perf import FirstCallClock, PerfSettings, apply_perf, model_bytes
from sdlab.pipeline.plan import ModelFacts, plan_request
from sdlab.pipeline.txt2img import RunContext, TextCache, Txt2ImgRun, txt2img
from sdlab.post.upscale import resolve_upscaler as resolve_image_upscaler
from sdlab.post.upscale import upscale_image
from sdlab.prompt.encode import EncodeOptions, TextConditioner
from sdlab.prompt.encode_emphasis import emphasis_infotext
from sdlab.prompt.encode_family import FAMILIES
from sdlab.prompt.tokenizer import ClipTokenizer
from sdlab.types import GenerationRequest, GenerationResult, HiresFix, PostSteps, ProgressCallback, RefinerSpec

DTYPES: Mapping[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_INFOTEXT_RENAMES: tuple[tuple[str, str], ...] = (("ensd", "eta_noise_seed_delta"),)
NATIVE_SIZE: Mapping[str, int] = {"sd1": 512, "sd2": 512, "sdxl": 1024, "sdxl-refiner": 1024}


def embedded_model_path() -> Path:
    """The single-file checkpoint of the embedded default model shipped in the package."""
    folder = resources.files("sdlab") / "data" / "default_model"
    files = sorted(p for p in Path(str(folder)).glob("*.safetensors")) if Path(str(folder)).is_dir() else []
    if not files:
        raise ModelNotFoundError(f"the embedded default model is missing from {folder}; reinstall sdlab")
    return files[0]


def _dtype(value: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value is None:
        return torch.float32 if device.type == "cpu" else torch.float16
    if value not in DTYPES:
        raise InvalidRequestError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
    return DTYPES[value]


@dataclass(frozen=True)
class _ModelKey:
    path: Path
    vae: Path | None


@dataclass
class _ModelState:
    """A loaded model plus what is derived from it once (text conditioner, encoded-text caches)."""

    model: LoadedModel
    name: str
    conditioner: TextConditioner
    caches: dict[tuple[object, ...], TextCache]
    embeddings: tuple[tuple[tuple[str, int, int], ...], EmbeddingLookup] | None = None
    nbytes: int = 0
    compile_clock: FirstCallClock | None = None
    native_size: int = 512


def resolution_from_metadata(metadata: Mapping[str, str]) -> int | None:
    """The training resolution a checkpoint declares (``modelspec.resolution`` "WxH"; the larger side)."""
    text = str(metadata.get("modelspec.resolution", "")).lower().replace(" ", "")
    parts = text.split("x")
    if len(parts) == 2 and all(p.isdigit() and 0 < int(p) <= 16384 for p in parts):
        return max(int(p) for p in parts)
    return None


def native_size(model: LoadedModel, metadata: Mapping[str, str] | None = None) -> int:
    """Training resolution in pixels: declared in the file's metadata, else the family's default."""
    declared = resolution_from_metadata(metadata or {})
    if declared is not None:
        return declared
    if model.family == "sd2" and model.prediction_type == "v_prediction":
        return 768
    return NATIVE_SIZE.get(model.family, 512)


def _pass_fields(known: Mapping[str, object], unknown: Mapping[str, object]) -> dict[str, object]:
    """Hires fix, refiner, post steps and mask mode of an infotext as request fields."""
    out: dict[str, object] = {}
    if "hr_upscaler" in known or "hr_scale" in known:
        resize_x, resize_y = int(known.get("hr_resize_x", 0) or 0), int(known.get("hr_resize_y", 0) or 0)
        out["hires"] = HiresFix(
            scale=float(known.get("hr_scale", 2.0)), upscaler=str(known.get("hr_upscaler", "Latent")),  # type: ignore[arg-type]
            second_pass_steps=int(known.get("hr_second_pass_steps", 0)), resize_x=resize_x, resize_y=resize_y,  # type: ignore[arg-type]
            denoising_strength=float(known.get("denoising_strength", 0.7)),  # type: ignore[arg-type]
            prompt=str(known.get("hr_prompt", "")), negative_prompt=str(known.get("hr_negative_prompt", "")),
            sampler=known.get("hr_sampler"), schedule_type=known.get("hr_scheduler"),  # type: ignore[arg-type]
        )
    if known.get("refiner_checkpoint"):
        out["refiner"] = RefinerSpec(str(known["refiner_checkpoint"]), float(known.get("refiner_switch_at", 0.8)),  # type: ignore[arg-type]
                                     by_sampling_steps=known.get("refiner_switch_by_sampling_steps") is True)
    post = PostSteps(face_restoration=known.get("face_restoration") or None,  # type: ignore[arg-type]
                     upscaler=unknown.get("Postprocess upscaler") or None,  # type: ignore[arg-type]
                     upscale_by=float(unknown.get("Postprocess upscale by", 2.0)))  # type: ignore[arg-type]
    if post.face_restoration or post.upscaler:
        out["post"] = post
    if known.get("mask_mode") == "Inpaint not masked":
        out["inpainting_mask_invert"] = True
    return out


class Engine:
    """Device, dtype, models folder and a cache of loaded models (``max_models`` most recently used).

    ``perf``: performance knobs applied at model load (:class:`~sdlab.pipeline.perf.PerfSettings`; the
    default changes nothing). ``perf.max_cache_bytes`` additionally bounds the cache by bytes of weights:
    least recently used models are dropped until the cache fits (the newest model always stays).
    ``persist_hashes``: keep file hashes across processes in ``<models_dir>/.sdlab-hashes.json`` (A1111
    keeps them in its ``cache.json``), so a new process does not hash a multi-GB checkpoint again.
    """

    def __init__(
        self,
        models_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        max_models: int = 1,
        env: Mapping[str, str] | None = None,
        perf: PerfSettings | None = None,
        persist_hashes: bool = False,
    ) -> None:
        self.models_dir: ModelsDir = choose_models_dir(models_dir, os.environ if env is None else env, os.getcwd())
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype(dtype, self.device)
        self.max_models = max(1, max_models)
        self.perf = perf or PerfSettings()
        self.perf.check_device(self.device)
        self.hashes = HashCache(hash_store_path(self.models_dir) if persist_hashes else None)
        self._models: OrderedDict[_ModelKey, _ModelState] = OrderedDict()
        self._tokenizers: dict[str, ClipTokenizer] = {}
        self._lock = threading.RLock()

    # -- models ---------------------------------------------------------------------------------
    def checkpoint_path(self, name: str | None) -> Path:
        """A checkpoint by name or path; None: the first in the models folder, else the embedded model."""
        if name is not None:
            return resolve_model(self.models_dir, "checkpoint", name, hashes=self.hashes)
        found = list_models(self.models_dir, "checkpoint")
        return found[0] if found else embedded_model_path()

    def list_models(self) -> list[CheckpointInfo]:
        """Checkpoints in the models folder with their detected family and A1111 short hash."""
        return list_checkpoints(self.models_dir, hashes=self.hashes)

    def _tokenizer(self, variant: str) -> ClipTokenizer:
        if variant not in self._tokenizers:
            self._tokenizers[variant] = ClipTokenizer.bundled(variant)
        return self._tokenizers[variant]

    def _state(self, name: str | None, vae: str | None) -> _ModelState:
        path = self.checkpoint_path(name)
        vae_path = resolve_model(self.models_dir, "vae", vae, hashes=self.hashes) if vae else None
        key = _ModelKey(path, vae_path)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        while len(self._models) >= self.max_models:
            self._models.popitem(last=False)
        # with CPU offload the weights stay in RAM and move to the GPU piece by piece (sdlab.pipeline.perf)
        load_device = torch.device("cpu") if self.perf.offload != "none" else self.device
        model = load_checkpoint(path, device=load_device, dtype=self.dtype, vae_path=vae_path, hash_cache=self.hashes)
        clock = apply_perf(model, self.perf, self.device, self.dtype)
        family = FAMILIES.get(model.family)
        # the loader derived the encoder widths from the checkpoint (tiny models are not 768 wide)
        family = replace(family, encoders=tuple(replace(spec, width=None) for spec in family.encoders))
        tokenizers = [self._tokenizer(spec.tokenizer) for spec in family.encoders]
        metadata = read_header(path).metadata if path.is_file() else {}
        state = _ModelState(model, path.stem, TextConditioner(family, tokenizers, model.text_encoders), {},
                            nbytes=model_bytes(model), compile_clock=clock, native_size=native_size(model, metadata))
        self._models[key] = state
        self._evict_to_bytes()
        return state

    def cached_bytes(self) -> int:
        """Bytes of weights held by the model cache."""
        return sum(s.nbytes for s in self._models.values())

    def cached_models(self) -> list[str]:
        """Names of the cached models, least recently used first."""
        return [s.name for s in self._models.values()]

    def _evict_to_bytes(self) -> None:
        """Drop least recently used models until the cache fits ``perf.max_cache_bytes`` (newest stays)."""
        limit = self.perf.max_cache_bytes
        while limit is not None and len(self._models) > 1 and self.cached_bytes() > limit:
            self._models.popitem(last=False)

    def _embeddings(self, state: _ModelState) -> EmbeddingLookup | None:
        """The textual-inversion lookup for ``state``'s model, rebuilt when the embeddings folder changes."""
        folder = self.models_dir.folder("embedding")
        signature = folder_signature(folder)
        if not signature:
            return None
        if state.embeddings is None or state.embeddings[0] != signature:
            lookup = lookup_for_folder(folder, state.conditioner.tokenizers[0], model_widths(state.model.text_encoders))
            state.embeddings = (signature, lookup)
        return state.embeddings[1]

    def load(self, name: str | None = None, vae: str | None = None) -> LoadedModel:
        """Load (or reuse) a checkpoint, optionally with an external VAE."""
        with self._lock:
            return self._state(name, vae).model

    # -- generation -----------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Plan, then run ``request``; raises InvalidRequestError before any work when it is malformed."""
        if not isinstance(request, GenerationRequest):
            raise InvalidRequestError(f"expected a GenerationRequest, got {type(request).__name__}")
        start = time.perf_counter()
        with self._lock:
            state = self._state(request.model, request.vae)
            loaded = time.perf_counter()
            model = state.model
            facts = ModelFacts(model.family, state.native_size, model.vae_scale_factor, model.latent_channels,
                               max_clip_skip=12)
            plan = plan_request(request, facts, extra_upscalers=self._hires_upscaler(request))
            lookup = self._embeddings(state)
            networks = prepare_networks(self.models_dir, request, plan.prompts, lookup, state.conditioner.tokenizers[0])
            options = EncodeOptions(emphasis=request.emphasis, clip_skip=request.clip_skip,
                                    comma_padding_backtrack=request.comma_padding_backtrack, embeddings=lookup)
            cache_key = (options, folder_signature(self.models_dir.folder("embedding")), networks.text_cache_key)
            cache = state.caches.setdefault(cache_key, TextCache(options))
            extra = {**emphasis_infotext(request.emphasis, [request.prompt, request.negative_prompt]),
                     **dict(networks.infotext)}
            run = Txt2ImgRun(model, state.name, state.conditioner, cache, self.device, self.dtype, extra_params=extra)
            run = replace(self._with_refiner(run, plan.request), image_upscaler=self._image_upscaler())
            passes = img2img if plan.request.is_img2img else txt2img
            post = None if request.post is None else prepare_post(request.post, self.models_dir, self.device)
            with applied_to_model(model, networks.specs):
                images, timings = passes(run, plan, RunContext(progress, cancel))
            if post is not None:
                post_start = time.perf_counter()
                images = apply_post_steps(images, post, self.models_dir, self.device)
                timings["post"] = time.perf_counter() - post_start
        compile_s = state.compile_clock.take() if state.compile_clock is not None else None
        extra_timings = {"compile": compile_s} if compile_s is not None else {}
        timings = {"load": loaded - start, **timings, **extra_timings, "total": time.perf_counter() - start}
        return GenerationResult(tuple(images), request, state.name, timings)

    def _hires_upscaler(self, request: GenerationRequest) -> tuple[str, ...]:
        """The hires image upscaler named by ``request`` when it is a model upscaler that exists (else ())."""
        hires = request.hires
        if hires is None or not isinstance(hires.upscaler, str) or hires.upscaler in LATENT_UPSCALE_MODES:
            return ()
        if hires.upscaler.strip().lower() in {n.lower() for n in IMAGE_UPSCALERS}:
            return ()
        resolve_image_upscaler(self.models_dir, hires.upscaler)  # ModelNotFoundError lists what exists
        return (hires.upscaler,)

    def _image_upscaler(self) -> Callable[..., Any]:
        """``sdlab.post.upscale.upscale_image`` bound to this engine's models folder and device."""
        return partial(upscale_image, models_dir=self.models_dir, device=self.device)

    def _with_refiner(self, run: Txt2ImgRun, request: GenerationRequest) -> Txt2ImgRun:
        """``run`` with the SDXL refiner's run attached when the request names one (loaded here)."""
        if request.refiner is None:
            return run
        state = self._state(request.refiner.checkpoint, request.vae)
        refiner, model = state.model, run.model
        if (refiner.latent_channels, refiner.vae_scale_factor) != (model.latent_channels, model.vae_scale_factor):
            raise InvalidRequestError(
                f"refiner {state.name} ({refiner.family}) does not share the latent space of {run.model_name} "
                f"({model.family}); use an SDXL refiner with an SDXL model"
            )
        options = EncodeOptions(emphasis=request.emphasis, clip_skip=request.clip_skip,
                                comma_padding_backtrack=request.comma_padding_backtrack)
        cache = state.caches.setdefault(("refiner", options), TextCache(options))
        return replace(run, refiner=Txt2ImgRun(refiner, state.name, state.conditioner, cache, self.device, self.dtype))

    # -- files ----------------------------------------------------------------------------------
    def save(self, result: GenerationResult, folder: str | os.PathLike[str], *, fmt: str = "png") -> list[SavedImage]:
        """Write every image of ``result`` to ``folder`` (A1111 names, atomic, never overwriting)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        return [save_image(img.image, out, seed=img.seed, infotext=img.infotext, fmt=fmt) for img in result.images]

    def request_from_infotext(self, text: str) -> GenerationRequest:
        """The request an A1111/sdlab infotext describes (model found again by name or hash)."""
        known, _unknown = infotext_to_request_fields(parse_infotext(text))
        for old, new in _INFOTEXT_RENAMES:
            if old in known:
                known[new] = known.pop(old)
        known["model"] = self._model_from_infotext(known.get("model"), known.get("model_hash"))
        if isinstance(known.get("prompt"), str) and known.get("lora_hashes"):
            known["prompt"] = relink_lora_tags(known["prompt"], known["lora_hashes"], self.models_dir)
        fields = {k: v for k, v in known.items() if k in GenerationRequest.field_names()}
        fields.update(_pass_fields(known, _unknown))
        return GenerationRequest(**fields)

    def _model_from_infotext(self, name: object, short_hash: object) -> str | None:
        """The checkpoint an infotext names: by name, else by hash; None for the embedded model."""
        for candidate in (name, short_hash):
            if isinstance(candidate, str) and candidate:
                try:
                    return str(resolve_model(self.models_dir, "checkpoint", candidate, hashes=self.hashes))
                except ModelNotFoundError:
                    continue
        if name is None or name == embedded_model_path().stem:
            return None
        raise ModelNotFoundError(
            f"the image was made with checkpoint {name!r} (hash {short_hash}), which is not in "
            f"{self.models_dir.folder('checkpoint')}; put it there or pass --model"
        )

    def request_from_image(self, path: str | os.PathLike[str]) -> GenerationRequest:
        """The request stored in an image's infotext (PNG ``parameters`` or EXIF UserComment)."""
        text = read_infotext(Path(path))
        if text is None:
            raise InvalidRequestError(f"{path} carries no generation parameters to regenerate from")
        return self.request_from_infotext(text)
