"""The torchvision stand-in exists only while spandrel is imported and never reaches transformers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest
import torch

from sdlab.post import spandrel_compat as compat

needs_spandrel = pytest.mark.skipif(
    importlib.util.find_spec("spandrel") is None,
    reason="spandrel is not installed (the venv needs: pip install --no-deps spandrel==0.4.2)",
)


def test_normalize_matches_the_formula() -> None:
    x = torch.rand(1, 3, 4, 5)
    out = compat.normalize(x, [0.5, 0.4, 0.3], [0.5, 0.2, 0.1])
    ref = (x - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.5, 0.2, 0.1]).view(3, 1, 1)
    assert torch.allclose(out, ref) and not torch.equal(out, x)  # not in place unless asked
    y = x.clone()
    assert compat.normalize(y, [0.5] * 3, [0.5] * 3, inplace=True) is y


def test_rotate_refuses_clearly() -> None:
    with pytest.raises(compat.UnsupportedModelError, match="rotate"):
        compat.rotate(torch.zeros(1, 3, 4, 4), 10.0)


def test_stand_in_is_removed_after_the_block() -> None:
    if compat.real_torchvision_installed():
        pytest.skip("a real torchvision is installed here")
    with compat.torchvision_stand_in():
        from torchvision.transforms.functional import normalize  # type: ignore[import-not-found]

        assert normalize is compat.normalize
    assert not any(name in sys.modules for name in compat.STAND_IN_MODULES)
    assert importlib.util.find_spec("torchvision") is None


_CHECK = """
import importlib.util, sys
{first}
{second}
import transformers.utils.import_utils as iu
assert "torchvision" not in sys.modules, "stand-in leaked"
assert importlib.util.find_spec("torchvision") is None
assert not iu.is_torchvision_available()
from diffusers import AutoencoderKL  # diffusers/transformers import normally
import spandrel
from spandrel.architectures.RestoreFormer import RestoreFormerArch  # holds the stand-in normalize
print("ok", spandrel.__version__)
"""


@needs_spandrel
@pytest.mark.parametrize("order", ["sdlab-first", "transformers-first"])
def test_fresh_interpreter_in_either_order(order: str) -> None:
    if compat.real_torchvision_installed():
        pytest.skip("a real torchvision is installed here")
    load = "from sdlab.post.spandrel_compat import import_spandrel; import_spandrel()"
    tf = "import transformers, diffusers"
    first, second = (load, tf) if order == "sdlab-first" else (tf, load)
    code = textwrap.dedent(_CHECK.format(first=first, second=second))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok 0.4")


def test_missing_spandrel_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import of it raises ModuleNotFoundError
    with pytest.raises(compat.UnsupportedModelError, match="pip install --no-deps spandrel==0.4.2"):
        compat.import_spandrel()
