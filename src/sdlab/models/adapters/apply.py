"""Applying several networks to a loaded model for one generation, and undoing them bit for bit.

:func:`applied_networks` is a context manager: on entry every network is resolved against the model
(all errors are raised before any weight changes), then the deltas are merged in prompt order (each
network sees the weights the previous ones produced, as in A1111). Each touched parameter is replaced
by a new tensor and the original tensor object is kept, so the exit restores the exact original
weights (same storage, same bits) with no copy, also when the body raises. Only touched weights are
held twice; nothing else is copied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from sdlab.errors import AdapterLoadError
from sdlab.models.adapters.keymap import ModuleIndex, Target
from sdlab.models.adapters.lora_file import NetworkFile, ResolvedNetwork, check_family, read_network, resolve_network
from sdlab.models.adapters.networks import NetworkModule, merged_weight


@dataclass(frozen=True, eq=False)
class NetworkSpec:
    """One network of a request: the file, its multipliers (any float; ``unet_multiplier`` None = same as
    te) and ``dyn_dim`` (LoRA rank truncation, None = full rank). ``name`` is the name used in the
    prompt (defaults to the file stem)."""

    network: NetworkFile
    te_multiplier: float = 1.0
    unet_multiplier: float | None = None
    dyn_dim: int | None = None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.network.name

    def multiplier(self, target: Target) -> float:
        """te multiplier for text-encoder modules, unet multiplier for UNet modules."""
        if target.is_text_encoder:
            return self.te_multiplier
        return self.te_multiplier if self.unet_multiplier is None else self.unet_multiplier


@dataclass(frozen=True)
class AppliedSummary:
    """What :func:`applied_networks` did: per network label, the number of modules patched, and the
    warnings for keys it skipped (absent components, modules A1111 ignores)."""

    patched: tuple[tuple[str, int], ...]
    warnings: tuple[str, ...]


def a1111_duplicates(specs: Sequence[NetworkSpec]) -> tuple[NetworkSpec, ...]:
    """A1111 keeps one network object per name: a network named twice is applied twice, both times with
    the multipliers and dyn_dim of its *last* mention (``<lora:x:0.5> <lora:x:1>`` = 2 x weight 1)."""
    last = {spec.label: spec for spec in specs}
    return tuple(
        replace(spec, te_multiplier=last[spec.label].te_multiplier, unet_multiplier=last[spec.label].unet_multiplier,
                dyn_dim=last[spec.label].dyn_dim)
        for spec in specs
    )  # fmt: skip


def _submodule(components: Mapping[str, torch.nn.Module], target: Target) -> torch.nn.Module:
    return components[target.component].get_submodule(target.real_path)


@dataclass
class _Backup:
    """Original parameter tensors of the touched modules, restored by pointer swap (bit-exact)."""

    weights: dict[int, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None, bool]]

    def remember(self, module: torch.nn.Module) -> None:
        if id(module) not in self.weights:
            bias = module.bias if isinstance(getattr(module, "bias", None), torch.Tensor) else None
            self.weights[id(module)] = (module, module.weight.data, None if bias is None else bias.data, bias is None)

    def restore(self) -> None:
        for module, weight, bias, had_no_bias in reversed(list(self.weights.values())):
            module.weight.data = weight
            if had_no_bias:
                module.bias = None
            else:
                module.bias.data = bias
        self.weights.clear()


def _patch(module: torch.nn.Module, new_weight: torch.Tensor, delta_b: torch.Tensor | None) -> None:
    """Point the module at new tensors (the originals stay alive in the backup)."""
    weight = module.weight.data
    module.weight.data = new_weight
    if delta_b is None:
        return
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        module.bias.data = (bias.data.float() + delta_b).to(bias.dtype)
    else:
        module.bias = torch.nn.Parameter(delta_b.to(weight.dtype), requires_grad=False)


def _apply_one(components: Mapping[str, torch.nn.Module], spec: NetworkSpec, target: Target,
               module: NetworkModule, backup: _Backup) -> None:  # fmt: skip
    sub = _submodule(components, target)
    backup.remember(sub)
    try:
        new_weight, delta_b = merged_weight(module, sub.weight.data, spec.multiplier(target), spec.dyn_dim)
    except AdapterLoadError as exc:
        raise AdapterLoadError(f"LoRA {spec.label!r}: {exc}") from None
    _patch(sub, new_weight, delta_b)


def resolve_all(components: Mapping[str, torch.nn.Module], specs: Sequence[NetworkSpec],
                family: str | None = None) -> tuple[ResolvedNetwork, ...]:  # fmt: skip
    """Resolve every network against the model (family check, key matching); raises before any change."""
    index = ModuleIndex.build(components)
    resolved = []
    for spec in specs:
        if family is not None:
            check_family(spec.network, family)
        resolved.append(resolve_network(spec.network, index))
    return tuple(resolved)


@contextmanager
def applied_networks(
    components: Mapping[str, torch.nn.Module], specs: Sequence[NetworkSpec], *, family: str | None = None
) -> Iterator[AppliedSummary]:
    """Merge ``specs`` (in order) into ``components`` (``{"unet": ..., "text_encoder": ...,
    "text_encoder_2": ...}``) for the duration of the ``with`` block; the original weights come back
    bit for bit on exit, also on error. ``family`` (``sd1``/``sd2``/``sdxl``...) enables the check that
    each network was made for that family. Raises AdapterLoadError (nothing changed) on bad networks."""
    specs = a1111_duplicates(specs)
    resolved = resolve_all(components, specs, family)
    backup = _Backup({})
    try:
        with torch.no_grad():
            for spec, net in zip(specs, resolved):
                for target, module in net.entries:
                    _apply_one(components, spec, target, module, backup)
        yield AppliedSummary(
            tuple((spec.label, len(net.entries)) for spec, net in zip(specs, resolved)),
            tuple(w for net in resolved for w in net.skipped),
        )
    finally:
        backup.restore()


def model_components(model: object) -> dict[str, torch.nn.Module]:
    """``{"unet": ..., "text_encoder": ..., "text_encoder_2": ...}`` of a ``LoadedModel`` (component
    names from its family's text-encoder specs)."""
    from sdlab.models.families import FAMILIES

    family = FAMILIES.get(model.family)  # type: ignore[attr-defined]
    names = [spec.name for spec in family.text_encoders]
    return {"unet": model.unet, **dict(zip(names, model.text_encoders))}  # type: ignore[attr-defined]


@contextmanager
def applied_to_model(model: object, specs: Sequence[NetworkSpec]) -> Iterator[AppliedSummary]:
    """:func:`applied_networks` on a ``LoadedModel`` with its family check."""
    with applied_networks(model_components(model), specs, family=model.family) as summary:  # type: ignore[attr-defined]
        yield summary


def find_network_file(lora_dir: str | os.PathLike[str], name: str) -> Path:
    """The network file called ``name`` (file stem, case-insensitive; sub-folders searched) under
    ``lora_dir``; ModelNotFoundError listing what exists otherwise."""
    from sdlab.models.adapters.hashes import find_by_name

    return find_by_name(Path(lora_dir), name, kind="LoRA")


def specs_from_refs(lora_dir: str | os.PathLike[str], refs: Sequence[object]) -> tuple[NetworkSpec, ...]:
    """NetworkSpecs from request-level references (``sdlab.types.LoraRef`` or prompt
    ``ExtraNetworkTag``: objects with name, te_multiplier, unet_multiplier, dyn_dim)."""
    cache: dict[Path, NetworkFile] = {}
    out = []
    for ref in refs:
        path = find_network_file(lora_dir, ref.name)  # type: ignore[attr-defined]
        if path not in cache:
            cache[path] = read_network(path)
        out.append(NetworkSpec(cache[path], float(ref.te_multiplier), ref.unet_multiplier,  # type: ignore[attr-defined]
                               ref.dyn_dim, ref.name))  # type: ignore[attr-defined]  # fmt: skip
    return tuple(out)
