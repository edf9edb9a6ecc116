"""LoRA / LyCORIS and textual-inversion glue for one generation (A1111's extra networks).

:func:`prepare_networks` turns a request's ``loras`` and the prompt's ``<lora:...>`` tags into network
specs (found in the models folder's ``Lora/`` or ``LyCORIS/``), finds the embeddings a prompt uses, and
gives the infotext entries A1111 writes for them (``Lora hashes``, ``TI``, ``TI hashes``). Applying the
networks is :func:`sdlab.models.adapters.apply.applied_to_model`, scoped to one generation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.models.adapters.apply import NetworkSpec, specs_from_refs
from sdlab.models.adapters.embeddings import EmbeddingLookup
from sdlab.models.adapters.hashes import (
    embedding_hash,
    find_by_hash,
    find_by_name,
    hashes_value,
    infotext_name,
    lora_hash,
)
from sdlab.models.paths import ModelsDir
from sdlab.prompt.parse import parse_prompt_attention
from sdlab.prompt.plan import PromptPlan
from sdlab.prompt.tokenizer import ClipTokenizer
from sdlab.types import GenerationRequest

#: prompt tag kinds handled as LoRA / LyCORIS networks (A1111's "lora" extra network takes both)
NETWORK_TAGS = ("lora", "lyco")


@dataclass(frozen=True)
class PreparedNetworks:
    """Networks to apply and the infotext entries they add, in A1111's order."""

    specs: tuple[NetworkSpec, ...]
    infotext: tuple[tuple[str, str], ...]

    @property
    def text_cache_key(self) -> tuple[tuple[str, float], ...]:
        """What changes text-encoder weights (LoRA name and te multiplier): part of the text cache key."""
        return tuple((s.label, float(s.te_multiplier)) for s in self.specs if s.te_multiplier)


def _refs(request: GenerationRequest, plan: PromptPlan) -> list[object]:
    unsupported = sorted({t.kind for t in plan.tags if t.kind not in NETWORK_TAGS})
    if unsupported:
        raise InvalidRequestError(
            f"prompt uses extra networks of kind {', '.join(unsupported)}, which sdlab does not support; "
            "remove those <...> tags (LoRA / LyCORIS tags are <lora:name:weight>)"
        )
    return [*request.loras, *(t for t in plan.tags if t.kind in NETWORK_TAGS)]


def network_folders(models: ModelsDir) -> tuple[Path, Path]:
    """Where A1111 looks for LoRA / LyCORIS files, in order: ``Lora/`` then ``LyCORIS/``."""
    return models.folder("lora"), models.folder("lycoris")


def _specs(models: ModelsDir, refs: Sequence[object]) -> tuple[NetworkSpec, ...]:
    folders = network_folders(models)
    specs: list[NetworkSpec] = []
    for ref in refs:
        errors: list[ModelNotFoundError] = []
        for folder in folders:
            try:
                specs.extend(specs_from_refs(folder, [ref]))
                break
            except ModelNotFoundError as exc:
                errors.append(exc)
        else:
            raise errors[0]
    return tuple(specs)


def used_embeddings(lookup: EmbeddingLookup | None, tokenizer: ClipTokenizer, texts: Sequence[str]) -> list[str]:
    """Names of the embeddings whose triggers occur in ``texts`` (first-mention order)."""
    if lookup is None:
        return []
    names: dict[str, None] = {}
    for text in texts:
        for piece, _weight in parse_prompt_attention(text):
            ids = tokenizer.encode(piece)
            for pos in range(len(ids)):
                match = lookup.find(ids, pos)
                if match is not None:
                    names[match.name] = None
    return list(names)


def prepare_networks(
    models: ModelsDir,
    request: GenerationRequest,
    plan: PromptPlan,
    lookup: EmbeddingLookup | None,
    tokenizer: ClipTokenizer,
) -> PreparedNetworks:
    """Specs for the request's LoRAs and the infotext entries for LoRAs and embeddings."""
    specs = _specs(models, _refs(request, plan))
    infotext: list[tuple[str, str]] = []
    if specs:
        infotext.append(("Lora hashes", hashes_value((s.label, lora_hash(s.network.path)) for s in specs)))
    used = used_embeddings(lookup, tokenizer, [*plan.distinct_texts])
    if used and lookup is not None:
        clean = [infotext_name(name) for name in used]
        infotext.append(("TI", ", ".join(clean)))
        infotext.append(("TI hashes", hashes_value((n, embedding_hash(lookup.embeddings[n].path)) for n in used)))
    return PreparedNetworks(specs, tuple(infotext))


_TAG = re.compile(r"<(lora|lyco):([^:>]+)")


def relink_lora_tags(prompt: str, lora_hashes: Mapping[str, str], models: ModelsDir) -> str:
    """Point ``<lora:name...>`` tags of an infotext prompt at the local files: a name not found in ``Lora/``
    or ``LyCORIS/`` is looked up by its ``Lora hashes`` short hash (A1111 does this when pasting)."""

    def local(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        folders = network_folders(models)
        for folder in folders:
            try:
                find_by_name(folder, name)
                return match.group(0)
            except ModelNotFoundError:
                continue
        short = lora_hashes.get(infotext_name(name))
        for folder in folders:
            found = find_by_hash(folder, short) if short and folder.is_dir() else None
            if found is not None:
                return f"<{kind}:{found.stem}"
        return match.group(0)

    return _TAG.sub(local, prompt)


def folder_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime) of every file under ``folder``: changes when embeddings change."""
    if not folder.is_dir():
        return ()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
