"""Network module types (LoRA, LoHa, LoKr, IA3, full, norm, GLoRA, OFT/BOFT) and their weight deltas.

Each type is a frozen :class:`NetworkType` in :data:`NETWORK_TYPES` (detection order = registration
order, as in A1111 v1.10.1): the tensor names that identify it, its rank (``dim``) rule and its raw
delta formula. :func:`compute_delta` applies A1111's common final step (reshape, scale, DoRA,
multiplier). All arithmetic is float32 in the order A1111 uses, so results match its vectors to ~1 ulp.

Where A1111 is silently wrong, sdlab follows LyCORIS instead; every such place is an entry of
:data:`DEVIATIONS` (the one list of deliberate deviations).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from sdlab.errors import AdapterLoadError
from sdlab.registry import Registry

Parts = Mapping[str, torch.Tensor]

#: tensor names that PEFT-named LoRA modules lose in A1111 (it keeps only up and down).
PEFT_DROPPED = ("alpha", "scale", "dora_scale", "lora_mid.weight")


@dataclass(frozen=True, eq=False)
class NetworkModule:
    """One module of a network file: ``name`` (key prefix in the file) and its ``parts`` (tensor name -> tensor)."""

    name: str
    parts: Mapping[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class RawDelta:
    """A type's raw delta ``delta`` with declared output shape ``shape`` and optional raw bias delta."""

    delta: torch.Tensor
    shape: tuple[int, ...]
    bias: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Delta:
    """What is added to a module: ``weight`` (shape of the weight) and ``bias`` (or None)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


@dataclass(frozen=True)
class NetworkType:
    """A module type: ``signatures`` (alternative sets of required tensor names; any one set identifies
    it), ``dim(parts, weight)`` (rank or None), ``raw(parts, weight, dyn_dim)`` and whether a ``scale``
    tensor / ``alpha`` may scale its delta (``scalable``)."""

    name: str
    signatures: tuple[frozenset[str], ...]
    raw: Callable[[Parts, torch.Tensor, int | None], RawDelta]
    dim: Callable[[Parts, torch.Tensor | None], int | None]
    scalable: bool = True

    def matches(self, names: frozenset[str]) -> bool:
        return any(sig <= names for sig in self.signatures)


# --------------------------------------------------------------------------------------------------
# small tensor helpers


def _flat2(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _cp(core: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Tucker/CP product: out[i, j, k, l] = sum_p sum_q core[p, q, k, l] * a[p, i] * b[q, j]."""
    return torch.einsum("pqkl,pi,qj->ijkl", core, _flat2(a), _flat2(b)).contiguous()


def _part(parts: Parts, name: str, module: str = "") -> torch.Tensor:
    if name not in parts:
        raise AdapterLoadError(f"network module {module!r} lacks tensor {name!r}")
    return parts[name]


# --------------------------------------------------------------------------------------------------
# LoRA / LoCon (kohya, LyCORIS locon incl. lora_mid, PEFT lora_A/lora_B)


def _lora_updown(parts: Parts) -> tuple[torch.Tensor, torch.Tensor]:
    up = parts.get("lora_up.weight", parts.get("lora_B.weight"))
    down = parts.get("lora_down.weight", parts.get("lora_A.weight"))
    if up is None or down is None:
        raise AdapterLoadError("LoRA module lacks its up/down tensors")
    return up, down


def _lora_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    up, down = _lora_updown(parts)
    mid = parts.get("lora_mid.weight")
    if mid is not None:
        shape = (up.shape[0], down.shape[1], *mid.shape[2:])
        return RawDelta(_cp(mid, up.reshape(up.shape[0], -1).t(), down), shape)
    u2, d2 = _flat2(up), _flat2(down)
    if dyn_dim is not None:
        u2, d2 = u2[:, :dyn_dim], d2[:dyn_dim]
    shape = (up.shape[0], down.shape[1], *(down.shape[2:] if down.dim() == 4 else ()))
    return RawDelta(u2 @ d2, tuple(shape))


def _lora_dim(parts: Parts, weight: torch.Tensor | None) -> int:
    return int(_lora_updown(parts)[1].shape[0])


# --------------------------------------------------------------------------------------------------
# LoHa (Hadamard product of two low-rank products, optional Tucker cores)


def _hada_factor(parts: Parts, i: int, shape: tuple[int, ...] | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    a, b, t = parts[f"hada_w{i}_a"], parts[f"hada_w{i}_b"], parts.get(f"hada_t{i}")
    if t is not None:
        return _cp(t, a, b), (a.shape[1], b.shape[1], *t.shape[2:])
    if shape is None:
        shape = (a.shape[0], b.shape[1], *(b.shape[2:] if b.dim() == 4 else ()))
    return (a @ _flat2(b)).reshape(shape), shape


def _loha_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    p1, shape = _hada_factor(parts, 1, None)
    p2, _ = _hada_factor(parts, 2, shape)
    return RawDelta(p1 * p2, shape)


def _loha_dim(parts: Parts, weight: torch.Tensor | None) -> int:
    return int(parts["hada_w1_b"].shape[0])


# --------------------------------------------------------------------------------------------------
# LoKr (Kronecker product, factors full or low-rank, optional Tucker core on w2)


def _lokr_factor(parts: Parts, i: int) -> torch.Tensor:
    full = parts.get(f"lokr_w{i}")
    if full is not None:
        return full
    a, b, t = parts[f"lokr_w{i}_a"], parts[f"lokr_w{i}_b"], parts.get(f"lokr_t{i}")
    return _cp(t, a, b) if t is not None else a @ _flat2(b)


def _lokr_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    k1, k2 = _lokr_factor(parts, 1), _lokr_factor(parts, 2)
    if weight.dim() == 4:
        shape = tuple(weight.shape)
    else:
        shape = (k1.shape[0] * k2.shape[0], k1.shape[1] * k2.shape[1])
    if k2.dim() == 4:
        k1 = k1.reshape(*k1.shape[:2], 1, 1)
    return RawDelta(torch.kron(k1, k2).reshape(shape), shape)


def _lokr_dim(parts: Parts, weight: torch.Tensor | None) -> int | None:
    for name in ("lokr_w2_b", "lokr_w1_b"):
        if name in parts:
            return int(parts[name].shape[0])
    return None


# --------------------------------------------------------------------------------------------------
# IA3, full, norm


def _ia3_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    v, on_input = parts["weight"], parts.get("on_input")
    if on_input is None:
        raise AdapterLoadError("IA3 module lacks its 'on_input' tensor (A1111 requires it)")
    if bool(on_input.reshape(-1)[0].item()):
        scale = v
    else:  # scale output channels (LyCORIS); see DEVIATIONS["ia3_on_output_conv"] for conv layers
        scale = v.reshape(-1, *([1] * (weight.dim() - 1)))
    return RawDelta(weight * scale, tuple(weight.shape))


def _none_dim(parts: Parts, weight: torch.Tensor | None) -> None:
    return None


def _full_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    diff = parts["diff"]
    return RawDelta(diff, tuple(diff.shape), parts.get("diff_b"))


def _norm_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    w = parts["w_norm"]
    return RawDelta(w, tuple(w.shape), parts["b_norm"])


# --------------------------------------------------------------------------------------------------
# GLoRA: delta = B + W A (two low-rank products; A1111 implements the LyCORIS <= 2.x layout)


def glora_is_v3_layout(parts: Parts, weight: torch.Tensor) -> bool:
    """True for the LyCORIS >= 3.0 layout (a1 (in, r), a2 (r, in), b1 (out, r), b2 (r, in))."""
    a1 = parts["a1.weight"]
    width = _flat2(weight).shape[1]
    return a1.shape[1] != width and a1.shape[0] == width


def _glora_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    a1, a2, b1, b2 = (_flat2(parts[n]) for n in ("a1.weight", "a2.weight", "b1.weight", "b2.weight"))
    w = _flat2(weight)
    if glora_is_v3_layout(parts, weight):
        delta = b1 @ b2 + (w @ a1) @ a2
    else:
        delta = b2 @ b1 + (w @ a2) @ a1
    return RawDelta(delta, tuple(weight.shape))


def _glora_dim(parts: Parts, weight: torch.Tensor | None) -> int | None:
    """No rank in A1111's (<= 2.x) layout, so alpha is unused; LyCORIS 3.x scales by alpha / rank."""
    if weight is not None and glora_is_v3_layout(parts, weight):
        return int(parts["a2.weight"].shape[0])
    return None


# --------------------------------------------------------------------------------------------------
# OFT / BOFT (block-diagonal orthogonal rotation of the output axis)


def _cayley(blocks: torch.Tensor, alpha: float | None, out: int) -> torch.Tensor:
    """R = (I + Q)(I - Q)^-1 with Q = B - B^T, Q's Frobenius norm clipped to alpha * out when alpha != 0."""
    q = blocks - blocks.transpose(-1, -2)
    if alpha:
        limit = alpha * out
        norm = q.norm()
        q = q * ((torch.clamp(norm, max=limit) + 1e-8) / (norm + 1e-8))
    eye = torch.eye(q.shape[-1], dtype=q.dtype)
    return (eye + q) @ torch.linalg.inv(eye - q)


def _rotate_blocks(rot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Block k of the output axis: W_k <- R_k^T W_k (R: (K, n, n))."""
    k, n = rot.shape[0], rot.shape[1]
    w = weight.reshape(k, n, -1)
    return torch.einsum("kji,kjr->kir", rot, w).reshape(weight.shape)


def _butterfly(rot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """BOFT: for each level i, rows regrouped by butterfly stride and each group multiplied by R[i][t]."""
    x = weight.reshape(weight.shape[0], -1)
    out, b = x.shape[0], rot.shape[-1]
    for i in range(rot.shape[0]):
        h = (2**i) * (b // 2)
        y = x.reshape(out // (2 * h), 2, h, -1).transpose(1, 2).reshape(-1, b, x.shape[1])
        y = torch.einsum("tab,tbr->tar", rot[i], y)
        x = y.reshape(out // (2 * h), h, 2, -1).transpose(1, 2).reshape(out, -1)
    return x.reshape(weight.shape)


def _oft_raw(parts: Parts, weight: torch.Tensor, dyn_dim: int | None) -> RawDelta:
    out = weight.shape[0]
    alpha = float(parts["alpha"].item()) if "alpha" in parts else None
    if "oft_blocks" in parts:
        blocks = parts["oft_blocks"]
        rot = _cayley(blocks, alpha, out)
        rotated = _butterfly(rot, weight) if blocks.dim() == 4 else _rotate_blocks(rot, weight)
    else:
        rotated = _rotate_blocks(parts["oft_diag"], weight)
    if "rescale" in parts:
        rescale = parts["rescale"]
        rotated = rescale.reshape(-1, *([1] * (weight.dim() - 1))) * rotated
    return RawDelta(rotated - weight, tuple(weight.shape))


# --------------------------------------------------------------------------------------------------
# registry


def _sig(*names: str) -> frozenset[str]:
    return frozenset(names)


NETWORK_TYPES: Registry[NetworkType] = Registry.of(
    "network module type",
    (
        (t.name, t)
        for t in (
            NetworkType(
                "lora",
                (_sig("lora_up.weight", "lora_down.weight"), _sig("lora_A.weight", "lora_B.weight")),
                _lora_raw,
                _lora_dim,
            ),
            NetworkType("loha", (_sig("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),), _loha_raw, _loha_dim),
            NetworkType("ia3", (_sig("weight"),), _ia3_raw, _none_dim),
            NetworkType(
                "lokr",
                tuple(
                    w1 | w2
                    for w1 in (_sig("lokr_w1"), _sig("lokr_w1_a", "lokr_w1_b"))
                    for w2 in (_sig("lokr_w2"), _sig("lokr_w2_a", "lokr_w2_b"))
                ),
                _lokr_raw,
                _lokr_dim,
            ),
            NetworkType("full", (_sig("diff"),), _full_raw, _none_dim),
            NetworkType("norm", (_sig("w_norm", "b_norm"),), _norm_raw, _none_dim),
            NetworkType(
                "glora", (_sig("a1.weight", "a2.weight", "alpha", "b1.weight", "b2.weight"),), _glora_raw, _glora_dim
            ),
            NetworkType("oft", (_sig("oft_blocks"), _sig("oft_diag")), _oft_raw, _none_dim, scalable=False),
        )
    ),
)


def effective_parts(parts: Parts) -> Parts:
    """The parts A1111 uses: a PEFT-named LoRA (``lora_A``/``lora_B``) keeps only up and down."""
    if "lora_A.weight" in parts and "lora_up.weight" not in parts:
        return MappingProxyType({k: v for k, v in parts.items() if k not in PEFT_DROPPED})
    return parts


def detect_type(module: NetworkModule) -> NetworkType:
    """The first registered type whose required tensors are all present; AdapterLoadError if none."""
    names = frozenset(effective_parts(module.parts))
    for _, entry in NETWORK_TYPES:
        if entry.matches(names):
            return entry
    raise AdapterLoadError(
        f"network module {module.name!r} has tensors {sorted(names)} that match no known type "
        f"({', '.join(NETWORK_TYPES.names())})"
    )


def module_rank(module: NetworkModule, weight: torch.Tensor | None = None) -> int | None:
    """The module's rank (``dim``) as A1111 defines it, or None for rankless types."""
    return detect_type(module).dim(effective_parts(module.parts), weight)


def module_scale(ntype: NetworkType, parts: Parts, weight: torch.Tensor | None) -> float:
    """s: a ``scale`` tensor; else alpha / dim when the type has a dim and ``alpha`` exists; else 1."""
    if not ntype.scalable:
        return 1.0
    if "scale" in parts:
        return float(parts["scale"].item())
    dim = ntype.dim(parts, weight)
    if dim is not None and "alpha" in parts:
        return float(parts["alpha"].item()) / dim
    return 1.0


# --------------------------------------------------------------------------------------------------
# DoRA and the common final step


def dora_on_output(dora_scale: torch.Tensor, weight: torch.Tensor) -> bool:
    """True for the ``[out, 1]`` layout (LyCORIS >= Dec 2024), False for A1111's ``[1, in]``."""
    is_in = dora_scale.shape[0] == 1 and dora_scale.numel() == weight.shape[1]
    return not is_in and dora_scale.shape[0] == weight.shape[0] and dora_scale.numel() == weight.shape[0]


def _dora(delta: torch.Tensor, weight: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """D - W with V = W + delta and D = V * (d / ||V||), norms per input channel ([1, in]) or per output
    channel ([out, 1]; see DEVIATIONS["dora_out_layout"]). No epsilon, as A1111."""
    merged = delta + weight
    ones = [1] * (weight.dim() - 2)
    if dora_on_output(dora_scale, weight):
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1, keepdim=True).reshape(merged.shape[0], 1, *ones)
        scale = dora_scale.reshape(norm.shape)
    else:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(merged.shape[1], *([1] * (weight.dim() - 1))).transpose(0, 1)
        scale = dora_scale
    return merged * (scale / norm) - weight


def compute_delta(module: NetworkModule, weight: torch.Tensor, multiplier: float, dyn_dim: int | None = None) -> Delta:
    """The float32 delta that A1111 adds to ``weight`` (the current weight) for this module.

    ``multiplier``: te or unet multiplier (any float); ``dyn_dim``: LoRA rank truncation or None.
    Raises AdapterLoadError when the delta does not fit the weight's shape.
    """
    ntype = detect_type(module)
    parts = effective_parts(module.parts)
    w = weight.float()
    try:
        raw = ntype.raw(parts, w, dyn_dim)
        delta = raw.delta
        if len(raw.shape) == 4:
            delta = delta.reshape(raw.shape)
        if delta.numel() == w.numel():
            delta = delta.reshape(w.shape)
    except (RuntimeError, KeyError, IndexError, ValueError) as exc:
        raise AdapterLoadError(f"network module {module.name!r} ({ntype.name}) does not fit a weight of shape "
                               f"{list(w.shape)}: {exc}") from None
    if delta.shape != w.shape:
        raise AdapterLoadError(
            f"network module {module.name!r} ({ntype.name}) gives a delta of shape {list(delta.shape)} for a weight "
            f"of shape {list(w.shape)}; the network was made for another model"
        )
    bias = raw.bias * multiplier if raw.bias is not None else None
    delta = delta * module_scale(ntype, parts, w)
    if "dora_scale" in parts:
        delta = _dora(delta, w, parts["dora_scale"].float())
    return Delta(delta * multiplier, bias)


def _plain_lora(ntype: NetworkType, parts: Parts) -> bool:
    return ntype.name == "lora" and "lora_mid.weight" not in parts and "dora_scale" not in parts


def merged_weight(module: NetworkModule, weight: torch.Tensor, multiplier: float,
                  dyn_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """``(W + delta, bias delta or None)`` as a new tensor in ``weight``'s dtype (``weight`` untouched).

    Plain LoRA modules take a fused path, ``addmm(W, up, down, alpha=m * s)``: one pass over W instead
    of four (equal to A1111's ``W + (up @ down) * s * m`` to float32 rounding)."""
    ntype = detect_type(module)
    parts = effective_parts(module.parts)
    w = weight.float()
    if not _plain_lora(ntype, parts):
        delta = compute_delta(module, w, multiplier, dyn_dim)
        return (w + delta.weight).to(weight.dtype), delta.bias
    up, down = _lora_updown(parts)
    u2, d2 = _flat2(up), _flat2(down)
    if dyn_dim is not None:
        u2, d2 = u2[:, :dyn_dim], d2[:dyn_dim]
    w2 = w.reshape(w.shape[0], -1)
    if u2.shape[0] != w2.shape[0] or d2.shape[1] != w2.shape[1]:
        compute_delta(module, w, multiplier, dyn_dim)  # raises the shape error
    alpha = module_scale(ntype, parts, w) * multiplier
    return torch.addmm(w2, u2, d2, alpha=alpha).reshape(w.shape).to(weight.dtype), None


# --------------------------------------------------------------------------------------------------
# deliberate deviations from A1111 v1.10.1


@dataclass(frozen=True)
class Deviation:
    """A place where A1111 is silently wrong and sdlab follows LyCORIS. ``applies(module, weight)``
    says whether a module (against its target weight) is affected; ``doc`` explains what differs."""

    name: str
    doc: str
    applies: Callable[[NetworkModule, torch.Tensor], bool]


def _is(type_name: str, module: NetworkModule) -> bool:
    try:
        return detect_type(module).name == type_name
    except AdapterLoadError:
        return False


DEVIATIONS: Registry[Deviation] = Registry.of(
    "deviation",
    (
        (d.name, d)
        for d in (
            Deviation(
                "dora_out_layout",
                "A `dora_scale` of shape [out, 1] (LyCORIS >= Dec 2024, wd_on_out) is applied by A1111 as if it were "
                "[1, in] (per-input-channel norms, per-output targets), inflating the weight. sdlab normalises per "
                "output channel: D = V * d / ||V[o, ...]||; otherwise A1111's DoRA step (W' = W + m (D - W)).",
                lambda m, w: "dora_scale" in effective_parts(m.parts)
                and dora_on_output(effective_parts(m.parts)["dora_scale"], w),
            ),
            Deviation(
                "glora_v3_layout",
                "GLoRA files in the LyCORIS >= 3.0 layout (a1 (in, r), a2 (r, in), b1 (out, r), b2 (r, in)) fail on "
                "every layer in A1111 (nothing applied). sdlab applies LyCORIS's delta (b1 b2 + W a1 a2) * alpha / r.",
                lambda m, w: _is("glora", m) and glora_is_v3_layout(m.parts, w.float()),
            ),
            Deviation(
                "ia3_on_output_conv",
                "IA3 with on_input = 0 on a Conv2d layer fails in A1111 (broadcasting error; layer skipped). sdlab "
                "scales the output channels as LyCORIS does: delta[o, i, k, l] = W[o, i, k, l] * v[o].",
                lambda m, w: _is("ia3", m) and w.dim() == 4 and not bool(m.parts["on_input"].reshape(-1)[0].item()),
            ),
            Deviation(
                "kohya_oft_sd1_names",
                "kohya OFT writes SD1.x module names in diffusers' layout (`oft_unet_down_blocks_...`), which A1111 "
                "never matches (its oft_unet fallback fits only original-layout names), so they are silently "
                "dropped. sdlab maps them like every other kohya name and applies them.",
                lambda m, w: m.name.startswith("oft_unet_") and not m.name.startswith(
                    ("oft_unet_input_blocks", "oft_unet_middle_block", "oft_unet_output_blocks", "oft_unet_out_",
                     "oft_unet_time_embed", "oft_unet_label_emb")
                ),
            ),
        )
    ),
)


def deviations_for(module: NetworkModule, weight: torch.Tensor) -> tuple[str, ...]:
    """Names of the :data:`DEVIATIONS` that apply to ``module`` on ``weight`` (empty: A1111's result)."""
    return tuple(name for name, d in DEVIATIONS if d.applies(module, weight))
