"""The sdlab command line: in-process for most checks, one real subprocess for the console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from sdlab.cli.main import main

TINY = ["--width", "64", "--height", "64", "--steps", "2", "--sampler", "Euler", "--model", "tiny-sd1"]


def run(models_root: Path, *args: str) -> int:
    return main(["--models-dir", str(models_root), "--device", "cpu", *args])


def test_txt2img_json_info_and_regenerate_from_image(models_root: Path, tmp_path: Path, capsys) -> None:
    assert run(models_root, "txt2img", "a (red:1.1) circle", "-n", "ugly", "--seed", "7", *TINY,
               "--out", str(tmp_path / "a"), "--json") == 0
    payload = json.loads(capsys.readouterr().out)
    first = Path(payload["images"][0]["path"])
    assert first.name == "00000-7.png" and first.is_file() and payload["images"][0]["seed"] == 7

    assert run(models_root, "info", str(first)) == 0
    info = capsys.readouterr().out
    assert "Seed: 7" in info and "Prompt: a (red:1.1) circle" in info and "Negative prompt: ugly" in info

    assert run(models_root, "txt2img", "--from", str(first), "--out", str(tmp_path / "b")) == 0
    second = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


def test_models_lists_checkpoints_with_family(models_root: Path, capsys) -> None:
    assert run(models_root, "models") == 0
    out = capsys.readouterr().out
    assert "tiny-sd1" in out and "sdxl" in out


def test_bad_input_exits_2_with_one_line(models_root: Path, tmp_path: Path, capsys) -> None:
    assert run(models_root, "txt2img", "x", *TINY[4:], "--width", "513", "--height", "64") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdlab: error:") and "multiple of 8" in err and "\n" not in err

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"hello")
    assert run(models_root, "info", str(not_an_image)) == 2
    assert capsys.readouterr().err.startswith("sdlab: error:")

    assert run(models_root, "txt2img") == 2
    assert "PROMPT" in capsys.readouterr().err


def test_console_script_runs_as_a_subprocess(models_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sdlab.cli.main", "--models-dir", str(models_root), "txt2img", "x", "--model", "nope"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("sdlab: error:") and "nope" in proc.stderr


def test_hashes_persist_in_the_models_folder_between_runs(models_root: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "models"
    (root / "Stable-diffusion").mkdir(parents=True)
    target = root / "Stable-diffusion" / "tiny-sd1.safetensors"
    shutil.copyfile(models_root / "Stable-diffusion/tiny-sd1.safetensors", target)
    store = root / ".sdlab-hashes.json"
    assert run(root, "--no-hash-cache", "txt2img", "x", *TINY, "--out", str(tmp_path / "a")) == 0
    assert not store.exists()
    assert run(root, "txt2img", "x", *TINY, "--out", str(tmp_path / "b")) == 0
    capsys.readouterr()
    saved = json.loads(store.read_text())["files"]
    assert [(f["path"], f["sha256"][:10]) for f in saved] == [(str(target.resolve()), sha256_hex(target)[:10])]
    assert run(root, "models") == 0  # listing ignores the store file and reads the hash from it
    assert "tiny-sd1" in capsys.readouterr().out


def sha256_hex(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
