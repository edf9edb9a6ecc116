"""models.paths and models.listing: the A1111 models folder, name resolution, listing."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.tiny_checkpoints import make_tiny_checkpoint, make_tiny_lora_file  # noqa: E402

from sdlab.errors import InvalidRequestError, ModelNotFoundError  # noqa: E402
from sdlab.models.files import HashCache  # noqa: E402
from sdlab.models.listing import list_checkpoints  # noqa: E402
from sdlab.models.paths import MODEL_KINDS, ModelsDir, choose_models_dir, list_models, resolve_model  # noqa: E402


def test_models_dir_choice_explicit_env_default(tmp_path: Path) -> None:
    assert choose_models_dir("/x", {"SDLAB_MODELS": "/y"}, tmp_path).root == Path("/x")
    assert choose_models_dir(None, {"SDLAB_MODELS": "/y"}, tmp_path).root == Path("/y")
    assert choose_models_dir(None, {"SDLAB_MODELS": ""}, tmp_path).root == tmp_path / "models"


def test_kind_folders_follow_a1111() -> None:
    md = ModelsDir(Path("/m"))
    assert md.folder("checkpoint") == Path("/m/Stable-diffusion")
    assert md.folder("Stable-diffusion") == Path("/m/Stable-diffusion")
    assert [MODEL_KINDS.get(k).folder for k in ("lora", "lycoris", "embedding", "vae", "esrgan", "codeformer")] == [
        "Lora", "LyCORIS", "embeddings", "VAE", "ESRGAN", "Codeformer"]  # fmt: skip
    with pytest.raises(InvalidRequestError, match="valid model kinds"):
        md.folder("controlnet")


def make_tree(root: Path) -> ModelsDir:
    sd = root / "Stable-diffusion"
    (sd / "sub").mkdir(parents=True)
    (sd / "alpha.safetensors").write_bytes(b"alpha")
    (sd / "sub" / "beta.ckpt").write_bytes(b"beta")
    (sd / "sub" / "alpha.ckpt").write_bytes(b"other alpha")
    (sd / "notes.txt").write_bytes(b"ignored")
    (root / "Lora").mkdir()
    (root / "Lora" / "style.safetensors").write_bytes(b"lora")
    return ModelsDir(root)


def test_listing_per_kind(tmp_path: Path) -> None:
    md = make_tree(tmp_path)
    names = [p.relative_to(md.folder("checkpoint")).as_posix() for p in list_models(md, "checkpoint")]
    assert names == ["alpha.safetensors", "sub/alpha.ckpt", "sub/beta.ckpt"]
    assert [p.name for p in list_models(md, "lora")] == ["style.safetensors"]
    assert list_models(md, "vae") == []


def test_resolution_forms(tmp_path: Path) -> None:
    md = make_tree(tmp_path)
    sd = md.folder("checkpoint")
    assert resolve_model(md, "checkpoint", "alpha.safetensors") == sd / "alpha.safetensors"
    assert resolve_model(md, "checkpoint", "sub/alpha.ckpt") == sd / "sub" / "alpha.ckpt"
    assert resolve_model(md, "checkpoint", "BETA") == sd / "sub" / "beta.ckpt"
    assert resolve_model(md, "checkpoint", "sub/beta") == sd / "sub" / "beta.ckpt"
    beta_hash = hashlib.sha256(b"beta").hexdigest()
    assert resolve_model(md, "checkpoint", beta_hash[:10]) == sd / "sub" / "beta.ckpt"
    assert resolve_model(md, "checkpoint", f"renamed.ckpt [{beta_hash[:10]}]") == sd / "sub" / "beta.ckpt"
    alpha2 = hashlib.sha256(b"other alpha").hexdigest()[:10]
    assert resolve_model(md, "checkpoint", f"alpha [{alpha2}]") == sd / "sub" / "alpha.ckpt"
    assert resolve_model(md, "checkpoint", "alpha [0123456789]") == sd / "alpha.safetensors"  # stale hash
    assert resolve_model(md, "checkpoint", "alpha") == sd / "alpha.safetensors"  # top-level path wins
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"x")
    assert resolve_model(md, "checkpoint", str(outside)) == outside


def test_ambiguous_and_missing_names(tmp_path: Path) -> None:
    md = make_tree(tmp_path)
    (md.folder("checkpoint") / "other").mkdir()
    (md.folder("checkpoint") / "other" / "beta.safetensors").write_bytes(b"beta 2")
    with pytest.raises(InvalidRequestError, match="ambiguous.*other/beta.safetensors.*sub/beta.ckpt"):
        resolve_model(md, "checkpoint", "beta")
    listed = "available: alpha.safetensors, other/beta.safetensors, sub/alpha.ckpt, sub/beta.ckpt"
    with pytest.raises(ModelNotFoundError, match=listed):
        resolve_model(md, "checkpoint", "gamma")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(md, "vae", "any")
    (tmp_path / "VAE").mkdir()
    with pytest.raises(ModelNotFoundError, match="has no vae files"):
        resolve_model(md, "vae", "any")
    with pytest.raises(ModelNotFoundError):
        resolve_model(md, "checkpoint", "../Lora/style.safetensors")


def test_list_checkpoints_detects_and_hashes(tmp_path: Path) -> None:
    md = ModelsDir(tmp_path)
    folder = md.folder("checkpoint")
    folder.mkdir()
    make_tiny_checkpoint(folder / "tiny.safetensors", "sd1")
    make_tiny_lora_file(folder / "oops_a_lora.safetensors")
    cache = HashCache()
    infos = {i.name: i for i in list_checkpoints(md, hashes=cache)}
    tiny, lora = infos["tiny.safetensors"], infos["oops_a_lora.safetensors"]
    assert tiny.detection is not None and tiny.detection.family == "sd1" and tiny.error is None
    assert tiny.short_hash == cache.sha256(folder / "tiny.safetensors")[:10]
    assert tiny.title == f"tiny.safetensors [{tiny.short_hash}]"
    assert lora.detection is None and lora.error is not None
    assert "LoRA" in lora.error and "models/Lora" in lora.error
    assert [i.short_hash for i in list_checkpoints(md, compute_hashes=False)] == [None, None]
