"""Post steps of a generation: face restoration and upscaling, as A1111 runs them after decoding.

Face restoration is A1111's "Restore faces" (infotext ``Face restoration: <name>``, written by the pass);
the upscale is A1111's extras step, whose ``Postprocess upscale by`` / ``Postprocess upscaler`` keys are
appended to the image's parameter line as the extras tab does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sdlab.errors import InvalidRequestError
from sdlab.models.paths import ModelsDir
from sdlab.post.face import FaceRestorer, load_face_restorer, restore_faces
from sdlab.post.upscale import resolve_upscaler, upscale_image
from sdlab.types import GeneratedImage, PostSteps


def check_post(post: PostSteps) -> None:
    """Range checks of the post steps (the names are checked when they are loaded)."""
    for name in ("visibility", "codeformer_weight"):
        value = getattr(post, name)
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise InvalidRequestError(f"post step {name} must be between 0 and 1, got {value!r}")
    if not isinstance(post.upscale_by, (int, float)) or not 0.0 < post.upscale_by <= 16.0:
        raise InvalidRequestError(f"post step upscale_by must be in (0, 16], got {post.upscale_by!r}")


def postprocess_infotext(infotext: str, post: PostSteps) -> str:
    """``infotext`` with the extras keys A1111 appends after an upscale."""
    if post.upscaler is None:
        return infotext
    return f"{infotext}, Postprocess upscale by: {post.upscale_by:g}, Postprocess upscaler: {post.upscaler}"


@dataclass(frozen=True)
class PreparedPost:
    """Post steps checked and loaded before any sampling, so a bad name fails before the work."""

    post: PostSteps
    restorer: FaceRestorer | None


def prepare_post(post: PostSteps, models: ModelsDir, device: torch.device) -> PreparedPost:
    """Check ``post``, load its face restorer and make sure its upscaler exists."""
    check_post(post)
    restorer = None
    if post.face_restoration is not None:
        restorer = load_face_restorer(post.face_restoration, models, device=device,
                                      allow_noncommercial=post.allow_noncommercial)
    if post.upscaler is not None:
        resolve_upscaler(models, post.upscaler)
    return PreparedPost(post, restorer)


def apply_post_steps(
    images: list[GeneratedImage], prepared: PreparedPost, models: ModelsDir, device: torch.device
) -> list[GeneratedImage]:
    """Restore faces, then upscale, every image; infotexts gain the upscale keys."""
    post, restorer = prepared.post, prepared.restorer
    out = []
    for img in images:
        picture = img.image
        if restorer is not None:
            picture = restore_faces(picture, restorer, visibility=post.visibility, weight=post.codeformer_weight)
        if post.upscaler is not None:
            picture = upscale_image(picture, post.upscaler, post.upscale_by, models_dir=models, device=device)
        out.append(replace(img, image=picture, infotext=postprocess_infotext(img.infotext, post)))
    return out
