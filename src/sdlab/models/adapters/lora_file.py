"""Reading a network (LoRA / LyCORIS) file: validation, grouping into modules, type, family and rank.

Files are read through :mod:`sdlab.models.files` (validated safetensors headers; pickles only with
``weights_only=True``). Every key must belong to a module of a known type; resolving modules against a
model (:func:`resolve_network`) refuses keys that name nothing in it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from sdlab.errors import AdapterLoadError, SdlabError
from sdlab.models.adapters.keymap import ModuleIndex, SplitKey, Target, a1111_ignores, split_key
from sdlab.models.adapters.networks import NetworkModule, detect_type, module_rank
from sdlab.models.files import open_state_dict, read_header

LOG = logging.getLogger(__name__)

#: text-encoder / cross-attention widths -> family (SDXL's second encoder is 1280 wide).
CONTEXT_WIDTH_FAMILY: Mapping[int, str] = MappingProxyType({768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl-refiner"})
TE_WIDTH_FAMILY: Mapping[int, str] = MappingProxyType({768: "sd1", 1024: "sd2"})
#: kohya ``ss_base_model_version`` prefixes -> family.
METADATA_FAMILY: tuple[tuple[str, str], ...] = (("sd_v1", "sd1"), ("sd_v2", "sd2"), ("sdxl", "sdxl"))
#: families whose networks fit each other (SDXL base LoRAs are used on SDXL fine-tunes of every kind).
FAMILY_GROUPS: Mapping[str, str] = MappingProxyType({"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "sdxl-refiner": "sdxl"})


@dataclass(frozen=True, eq=False)
class NetworkFile:
    """A network file grouped into modules: ``modules`` (file order), ``keys`` (module name -> SplitKey of
    its first key), ``metadata`` (safetensors metadata) and ``name`` (the file stem)."""

    name: str
    path: Path
    modules: tuple[NetworkModule, ...]
    keys: Mapping[str, SplitKey]
    metadata: Mapping[str, str]

    @property
    def module_types(self) -> tuple[str, ...]:
        """Distinct module types, in file order."""
        return tuple(dict.fromkeys(detect_type(m).name for m in self.modules))

    @property
    def rank(self) -> int | None:
        """The largest module rank (None when no module has one)."""
        ranks = [r for m in self.modules if (r := module_rank(m)) is not None]
        return max(ranks) if ranks else None


def _tensor(state: Mapping[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    t = state[key]
    if not isinstance(t, torch.Tensor):
        raise AdapterLoadError(f"{path}: entry {key!r} is not a tensor")
    if t.dtype.is_floating_point:
        return t.to(torch.float32)
    if key.endswith(".on_input"):
        return t
    raise AdapterLoadError(f"{path}: tensor {key!r} has dtype {t.dtype}; network tensors must be floating point")


def _open(path: Path) -> tuple[Mapping[str, torch.Tensor], Mapping[str, str]]:
    try:
        header = read_header(path)
        return open_state_dict(path), dict(header.metadata)
    except SdlabError as exc:
        raise AdapterLoadError(f"cannot read network file {path}: {exc}") from None


def group_modules(state: Mapping[str, torch.Tensor], path: Path) -> tuple[tuple[NetworkModule, ...], dict[str, SplitKey]]:
    """Group ``state`` into modules; AdapterLoadError listing keys with no known prefix."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    keys: dict[str, SplitKey] = {}
    unknown: list[str] = []
    for key in state:
        split = split_key(key)
        if split is None or not split.part:
            unknown.append(key)
            continue
        parts.setdefault(split.module, {})[split.part] = _tensor(state, key, path)
        keys.setdefault(split.module, split)
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise AdapterLoadError(
            f"{path}: {len(unknown)} keys are not LoRA/LyCORIS keys (expected lora_unet_/lora_te_/oft_unet_... "
            f"or unet./text_encoder. prefixes): {shown}"
        )
    modules = tuple(NetworkModule(name, MappingProxyType(p)) for name, p in parts.items())
    for module in modules:
        detect_type(module)  # raises AdapterLoadError naming the module
    return modules, keys


def read_network(path: str | os.PathLike[str]) -> NetworkFile:
    """Read and validate a network file (.safetensors, or .pt/.ckpt/.bin through weights-only loading)."""
    p = Path(path)
    if not p.is_file():
        raise AdapterLoadError(f"network file {p} does not exist")
    state, metadata = _open(p)
    try:
        modules, keys = group_modules(state, p)
    except (SdlabError, OSError, RuntimeError) as exc:
        if isinstance(exc, AdapterLoadError):
            raise
        raise AdapterLoadError(f"cannot read network file {p}: {exc}") from None
    if not modules:
        raise AdapterLoadError(f"network file {p} holds no tensors")
    return NetworkFile(p.stem, p, modules, MappingProxyType(keys), MappingProxyType(metadata))


# --------------------------------------------------------------------------------------------------
# family


def _input_width(module: NetworkModule) -> int | None:
    for name in ("lora_down.weight", "lora_A.weight", "hada_w1_b", "a1.weight"):
        t = module.parts.get(name)
        if t is not None and t.dim() == 2:
            return int(t.shape[1])
    return None


def _width_family(net: NetworkFile, needle: str, table: Mapping[int, str]) -> str | None:
    for module in net.modules:
        if needle in net.keys[module.name].flat.replace(".", "_"):
            width = _input_width(module)
            if width in table:
                return table[width]
    return None


def network_family(net: NetworkFile) -> str | None:
    """The model family a network was made for (``sd1``, ``sd2``, ``sdxl``), from shapes, or None.

    Evidence, in order: the cross-attention context width of ``attn2`` key/value layers; a second text
    encoder (``lora_te2_``) -> SDXL; the text encoder's width; kohya's ``ss_base_model_version``."""
    found = _width_family(net, "attn2_to_k", CONTEXT_WIDTH_FAMILY) or _width_family(
        net, "attn2_to_v", CONTEXT_WIDTH_FAMILY
    )
    if found:
        return found
    if any(k.component == "text_encoder_2" for k in net.keys.values()):
        return "sdxl"
    found = _width_family(net, "self_attn_q_proj", TE_WIDTH_FAMILY)
    if found:
        return found
    version = net.metadata.get("ss_base_model_version", "")
    return next((fam for prefix, fam in METADATA_FAMILY if version.startswith(prefix)), None)


def check_family(net: NetworkFile, model_family: str) -> None:
    """AdapterLoadError when ``net`` was made for another family than ``model_family``."""
    family = network_family(net)
    if family is None or model_family not in FAMILY_GROUPS:
        return
    if FAMILY_GROUPS.get(family, family) != FAMILY_GROUPS[model_family]:
        raise AdapterLoadError(
            f"LoRA {net.name!r} was made for {family.upper()} (from its tensor shapes) but the loaded checkpoint "
            f"is {model_family.upper()}; use a LoRA trained for {model_family.upper()} or load a matching checkpoint"
        )


# --------------------------------------------------------------------------------------------------
# resolving against a model


@dataclass(frozen=True, eq=False)
class ResolvedNetwork:
    """A network matched to a model: ``entries`` ((target, module) in file order) and ``skipped``
    (warnings for keys of absent components or modules A1111 ignores)."""

    file: NetworkFile
    entries: tuple[tuple[Target, NetworkModule], ...]
    skipped: tuple[str, ...]


def _module_keys(module: NetworkModule) -> str:
    return ", ".join(f"{module.name}.{p}" for p in module.parts)


def resolve_network(net: NetworkFile, index: ModuleIndex) -> ResolvedNetwork:
    """Match every module of ``net`` to a module of the indexed model.

    Keys of a component the model lacks (``lora_te2_`` on SD1) and modules A1111 never matches are
    skipped with a warning; any other key that names no module raises AdapterLoadError listing them."""
    entries: list[tuple[Target, NetworkModule]] = []
    skipped: list[str] = []
    unmatched: list[str] = []
    for module in net.modules:
        key = net.keys[module.name]
        if key.component not in index.components:
            skipped.append(f"{module.name}: the model has no {key.component}")
            continue
        target = index.resolve(key)
        if target is None:
            unmatched.append(_module_keys(module))
        elif a1111_ignores(target):
            skipped.append(f"{module.name}: A1111 ignores {target.full_path}; skipped to match it")
        else:
            entries.append((target, module))
    if unmatched:
        raise AdapterLoadError(
            f"LoRA {net.name!r}: {len(unmatched)} modules match nothing in the loaded model (misspelt key, or a "
            f"network for another model): {'; '.join(unmatched[:10])}"
        )
    for line in skipped:
        LOG.warning("LoRA %r: %s", net.name, line)
    return ResolvedNetwork(net, tuple(entries), tuple(skipped))
