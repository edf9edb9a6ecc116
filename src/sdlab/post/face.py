"""Face restoration: GFPGAN (spandrel core) and CodeFormer (optional non-commercial package).

What follows A1111 v1.10.1: each detected face is cut out as a 512x512 crop, given to the network as
RGB normalised to [-1, 1] (GFPGAN: ``net(x, return_rgb=False)[0]``; CodeFormer:
``net(x, weight=w, adain=True)[0]``, ``w`` the fidelity weight, 0 = strongest restoration, 1 = most
faithful), its output clamped to [-1, 1] and truncated to 8 bits, pasted back with a feathered
mask, and the result blended with the input as ``Image.blend(original, restored, visibility)`` when
visibility < 1 (visibility 0 returns the input untouched). GFPGAN's decoder draws fresh noise on each
call, as in A1111, so two runs differ slightly unless the torch RNG is seeded.

What differs: A1111 finds faces with facexlib's RetinaFace (weights downloaded at run time) and aligns
them on five landmarks. No registry package ships RetinaFace weights, so sdlab uses the detector that
does ship with one: OpenCV's frontal-face Haar cascade (``opencv-python-headless``, file
``cv2/data/haarcascade_frontalface_default.xml``). It gives boxes, not landmarks: crops are upright
squares framed like the FFHQ template (face about half the crop, nose 11% below its centre), so
tilted or profile faces are found less often and restored less well than in A1111.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdlab.errors import InvalidRequestError, ModelNotFoundError, UnsupportedModelError
from sdlab.models.paths import ModelsDir, list_models, resolve_model
from sdlab.post.images import to_rgb
from sdlab.post.loading import ArchitectureSet, load_model
from sdlab.registry import Registry

FACE_SIZE = 512  # px, the crop the networks take
CROP_PER_FACE = 2.0  # crop side / detected face box width (FFHQ framing)
NOSE_BELOW_CENTRE = 0.113  # FFHQ template: nose tip at y=314 of 512
CASCADE_FILE = "haarcascade_frontalface_default.xml"
DETECTOR_HINT = "install the detector with: pip install opencv-python-headless==4.13.0.92"


@dataclass(frozen=True)
class FaceBox:
    """A detected face: top-left corner and size in image px."""

    x: int
    y: int
    width: int
    height: int


# --------------------------------------------------------------------------------------------------
# detection


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise UnsupportedModelError(f"face detection needs OpenCV, which is not installed; {DETECTOR_HINT}") from None
    return cv2


def haar_cascade_path() -> Path:
    """The Haar cascade shipped in the opencv-python-headless wheel; UnsupportedModelError if absent."""
    cv2 = _cv2()
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADE_FILE
    if not folder or not path.is_file():
        raise UnsupportedModelError(
            f"the face detector weights {CASCADE_FILE} are absent from this OpenCV ({cv2.__version__}; OpenCV 5 "
            f"no longer ships Haar cascades); {DETECTOR_HINT}"
        )
    return path


def detect_faces(rgb: np.ndarray) -> list[FaceBox]:
    """Frontal faces in an ``(H, W, 3)`` uint8 RGB array, largest first (OpenCV Haar cascade)."""
    cv2 = _cv2()
    cascade = cv2.CascadeClassifier(str(haar_cascade_path()))
    if cascade.empty():
        raise UnsupportedModelError(f"OpenCV could not read the face detector {haar_cascade_path()}")
    grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    smallest = max(24, min(rgb.shape[:2]) // 32)
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
    boxes = [FaceBox(int(x), int(y), int(w), int(h)) for x, y, w, h in np.asarray(found).reshape(-1, 4)]
    return sorted(boxes, key=lambda b: -b.width * b.height)


# --------------------------------------------------------------------------------------------------
# crop geometry (pure)


def crop_matrix(box: FaceBox, size: int = FACE_SIZE) -> np.ndarray:
    """2x3 affine matrix mapping image px to the ``size``-px face crop (scale and shift, no rotation)."""
    side = CROP_PER_FACE * box.width
    cx = box.x + box.width / 2.0
    cy = box.y + box.height / 2.0 - NOSE_BELOW_CENTRE * side
    k = size / side
    return np.array([[k, 0.0, size / 2.0 - k * cx], [0.0, k, size / 2.0 - k * cy]], dtype=np.float64)


def feather_mask(shape: tuple[int, int], matrix: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """``(H, W)`` float mask in [0, 1]: the crop's footprint in the image, eroded and blurred at its edge."""
    cv2 = _cv2()
    inverse = cv2.invertAffineTransform(matrix)
    footprint = cv2.warpAffine(np.ones((size, size), np.float32), inverse, (shape[1], shape[0]))
    edge = max(1, int(round(2 * size / 100 / matrix[0, 0])))  # ~2% of the crop, in image px
    eroded = cv2.erode(footprint, np.ones((2 * edge + 1, 2 * edge + 1), np.uint8))
    return np.clip(cv2.GaussianBlur(eroded, (0, 0), sigmaX=edge), 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# restorers


FaceCall = Callable[[Any, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class RestorerKind:
    """A face-restoration family: its models folder, expected spandrel architecture and call."""

    name: str
    folder_kind: str  # sdlab.models.paths kind
    architecture: str  # spandrel architecture id
    default_stem: str  # A1111's file name for it
    call: FaceCall
    noncommercial: bool


RESTORERS: Registry[RestorerKind] = Registry.of(
    "face restorer",
    [
        ("GFPGAN", RestorerKind("GFPGAN", "gfpgan", "GFPGAN", "GFPGANv1.4",
                                lambda net, x, w: net(x, return_rgb=False)[0], False)),
        ("CodeFormer", RestorerKind("CodeFormer", "codeformer", "CodeFormer", "codeformer-v0.1.0",
                                    lambda net, x, w: net(x, weight=w, adain=True)[0], True)),
    ],
)  # fmt: skip


@dataclass(frozen=True)
class FaceRestorer:
    """A loaded face-restoration network (the raw module) with its kind and device."""

    kind: RestorerKind
    path: Path
    net: Any  # torch.nn.Module
    device: torch.device
    dtype: torch.dtype

    def restore_crop(self, crop: np.ndarray, weight: float) -> np.ndarray:
        """One ``(512, 512, 3)`` uint8 RGB face crop restored (A1111 normalisation and quantisation)."""
        x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float().div(255.0)
        x = x.sub(0.5).div(0.5).unsqueeze(0).to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.kind.call(self.net, x, weight)
        out = (out.squeeze(0).float().cpu().clamp(-1, 1) + 1) / 2
        return np.ascontiguousarray((out.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8))


def _model_file(models: ModelsDir, kind: RestorerKind, model: str | None) -> Path:
    if model:
        return resolve_model(models, kind.folder_kind, model)
    files = list_models(models, kind.folder_kind)
    if len(files) == 1:
        return files[0]
    preferred = [p for p in files if p.stem.lower() == kind.default_stem.lower()]
    if preferred:
        return preferred[0]
    folder = models.folder(kind.folder_kind)
    if not files:
        raise ModelNotFoundError(f"no {kind.name} model in {folder}; put e.g. {kind.default_stem}.pth there")
    names = ", ".join(p.name for p in files)
    raise InvalidRequestError(f"several {kind.name} models in {folder} ({names}); choose one by name")


def load_face_restorer(name: str, models_dir: ModelsDir | str | os.PathLike[str], *, model: str | None = None,
                       device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       allow_noncommercial: bool = False) -> FaceRestorer:  # fmt: skip
    """Load ``GFPGAN`` or ``CodeFormer`` from its models folder (``model``: a file name there, optional).

    CodeFormer needs ``allow_noncommercial=True`` and the ``spandrel_extra_arches`` package: its
    licence (S-Lab, non-commercial) is not sdlab's.
    """
    kind = RESTORERS.get(name)
    if kind.noncommercial and not allow_noncommercial:
        raise InvalidRequestError(
            f"{kind.name} is under a non-commercial licence; pass allow_noncommercial=True "
            "(CLI: --allow-noncommercial) to use it"
        )
    models = models_dir if isinstance(models_dir, ModelsDir) else ModelsDir(Path(models_dir))
    path = _model_file(models, kind, model)
    descriptor = load_model(path, torch.device(device), dtype, ArchitectureSet(noncommercial=kind.noncommercial))
    if str(descriptor.architecture.id) != kind.architecture:
        raise UnsupportedModelError(
            f"{path}: is a {descriptor.architecture.name} model, not {kind.name}; put it in the right folder"
        )
    return FaceRestorer(kind, path, descriptor.model.eval(), torch.device(device), descriptor.dtype)


# --------------------------------------------------------------------------------------------------
# the whole step


def restore_faces_array(rgb: np.ndarray, restore: Callable[[np.ndarray], np.ndarray],
                        boxes: list[FaceBox]) -> np.ndarray:  # fmt: skip
    """Crop each face, ``restore`` it (512x512 uint8 RGB in and out), paste back with a feathered mask."""
    cv2 = _cv2()
    out = rgb.astype(np.float32)
    h, w = rgb.shape[:2]
    for box in boxes:
        m = crop_matrix(box)
        crop = cv2.warpAffine(rgb, m, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(132, 133, 135))  # fmt: skip
        restored = restore(crop)
        back = cv2.warpAffine(restored, cv2.invertAffineTransform(m), (w, h), flags=cv2.INTER_LINEAR)
        alpha = feather_mask((h, w), m)[:, :, None]
        out = alpha * back.astype(np.float32) + (1.0 - alpha) * out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def check_unit(value: float, what: str) -> float:
    """``value`` in [0, 1]; InvalidRequestError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InvalidRequestError(f"{what} must be between 0 and 1, got {value!r}")
    return float(value)


def restore_faces(image: Image.Image, restorer: FaceRestorer, *, visibility: float = 1.0, weight: float = 0.5,
                  boxes: list[FaceBox] | None = None) -> Image.Image:  # fmt: skip
    """Faces in ``image`` restored, then blended with it by ``visibility`` (A1111 extras semantics).

    ``weight`` is CodeFormer's fidelity weight (ignored by GFPGAN); ``boxes`` overrides detection.
    """
    visibility, weight = check_unit(visibility, "visibility"), check_unit(weight, "CodeFormer weight")
    rgb_image = to_rgb(image)
    if visibility == 0:
        return rgb_image
    rgb = np.asarray(rgb_image)
    found = detect_faces(rgb) if boxes is None else boxes
    restored = Image.fromarray(restore_faces_array(rgb, lambda c: restorer.restore_crop(c, weight), found), "RGB")
    return restored if visibility >= 1.0 else Image.blend(rgb_image, restored, visibility)
