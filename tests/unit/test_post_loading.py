"""Upscaler files are read defensively: corrupt files, code-executing pickles and unknown
architectures give clear UnsupportedModelError messages; nothing in a pickle is ever run."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest
import torch

from sdlab.errors import UnsupportedModelError
from sdlab.post.loading import read_state_dict

needs_spandrel = pytest.mark.skipif(
    importlib.util.find_spec("spandrel") is None,
    reason="spandrel is not installed (the venv needs: pip install --no-deps spandrel==0.4.2)",
)


class _Payload:
    """Pickles to a call of ``Path.touch`` on a marker file: executing the pickle creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_code_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": _Payload(marker)}, path)
    with pytest.raises(UnsupportedModelError, match="code execution"):
        read_state_dict(path)
    assert not marker.exists()
    raw = tmp_path / "evil_raw.pth"  # a bare (non-zip) pickle stream, protocol 2
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(UnsupportedModelError):
        read_state_dict(raw)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"PK\x03\x04 truncated zip"])
def test_corrupt_pth_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(UnsupportedModelError, match="broken.pth"):
        read_state_dict(path)


def test_corrupt_safetensors_and_unknown_suffix(tmp_path: Path) -> None:
    st = tmp_path / "broken.safetensors"
    st.write_bytes(b"\xff" * 12)
    with pytest.raises(UnsupportedModelError, match="header"):
        read_state_dict(st)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(UnsupportedModelError, match="unknown model file type '.onnx'"):
        read_state_dict(onnx)


def test_non_dict_pickle(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(UnsupportedModelError, match="expected a state dict"):
        read_state_dict(path)


@needs_spandrel
def test_wrappers_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"params_ema": {"a.weight": torch.ones(2)}, "params": {"a.weight": torch.zeros(2)}, "iter": 5}, path)
    sd = read_state_dict(path)
    assert list(sd) == ["a.weight"] and torch.equal(sd["a.weight"], torch.ones(2))


@needs_spandrel
def test_unknown_architecture(tmp_path: Path) -> None:
    from sdlab.post.upscale import upscale_image

    (tmp_path / "ESRGAN").mkdir()
    torch.save({"encoder.layer.0.weight": torch.zeros(4, 4)}, tmp_path / "ESRGAN" / "mystery.pth")
    from PIL import Image

    with pytest.raises(UnsupportedModelError, match="unknown model architecture"):
        upscale_image(Image.new("RGB", (16, 16)), "mystery", 2, models_dir=tmp_path, tile=0)
