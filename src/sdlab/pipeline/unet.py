"""The diffusers UNet as the ``unet(x_in, t, cond)`` callable the sampler wrappers expect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class UNetCall:
    """Calls a diffusers ``UNet2DConditionModel`` in its dtype and returns float32 output.

    ``cond`` is a dict with ``context`` [N, 77k, D] and optionally ``text_embeds`` / ``time_ids`` (SDXL).
    ``concat``: extra input channels [1, K, h, w] appended to every latent (inpainting / instruct models);
    an ``image_scale`` [N] entry in ``cond`` multiplies them row by row (instruct-pix2pix's image CFG
    passes 0 for its image-unconditional rows).
    """

    unet: torch.nn.Module
    dtype: torch.dtype
    concat: Tensor | None = None

    def __call__(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        sample = x if self.concat is None else torch.cat([x, self._concat(x.shape[0], cond)], dim=1)
        kwargs = {}
        if "text_embeds" in cond:
            kwargs["added_cond_kwargs"] = {
                "text_embeds": cond["text_embeds"].to(self.dtype),
                "time_ids": cond["time_ids"].to(self.dtype),
            }
        with torch.inference_mode():
            out = self.unet(
                sample.to(self.dtype),
                t.to(torch.float32),
                encoder_hidden_states=cond["context"].to(self.dtype),
                return_dict=False,
                **kwargs,
            )[0]
        return out.to(torch.float32)

    def _concat(self, rows: int, cond: Mapping[str, Tensor]) -> Tensor:
        assert self.concat is not None
        extra = self.concat.expand(rows, -1, -1, -1)
        scale = cond.get("image_scale")
        return extra if scale is None else extra * scale.to(extra).view(-1, 1, 1, 1)
