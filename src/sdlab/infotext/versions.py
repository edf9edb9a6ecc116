"""Version ordering (PEP 440, as A1111's packaging.version) and the flags A1111 sets for old infotexts."""

from __future__ import annotations

import re
from typing import Any

_PEP440 = re.compile(
    r"""
    ^\s*v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*$
    """,
    re.VERBOSE | re.IGNORECASE,
)
_PRE_LETTER = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "pre": "rc", "preview": "rc", "rc": "rc"}

VersionKey = tuple[Any, ...]


def version_key(text: str) -> VersionKey | None:
    """A sort key ordering versions as PEP 440 does; ``None`` when ``text`` is not a valid version."""
    m = _PEP440.match(text)
    if m is None:
        return None
    release = [int(part) for part in m["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    has_pre = m["pre_l"] is not None
    has_post = m["post_n1"] is not None or m["post_l"] is not None
    has_dev = m["dev_l"] is not None
    if has_pre:
        pre: tuple[Any, ...] = (1, _PRE_LETTER[m["pre_l"].lower()], int(m["pre_n"] or 0))
    else:
        pre = (0,) if has_dev and not has_post else (2,)
    post = (1, int(m["post_n1"] or m["post_n2"] or 0)) if has_post else (0,)
    dev = (0, int(m["dev_n"] or 0)) if has_dev else (1,)
    local: tuple[Any, ...] = (0,)
    if m["local"] is not None:
        parts = re.split(r"[-_.]", m["local"].lower())
        local = (1, tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts))
    return (int(m["epoch"] or 0), tuple(release), pre, post, dev, local)


def infotext_version(text: str | None) -> VersionKey | None:
    """A1111's ``infotext_versions.parse_version``: cut to the first two ``-`` parts, then PEP 440."""
    if text is None:
        return None
    cut = re.match(r"([^-]+-[^-]+)-.*", text)
    return version_key(cut.group(1) if cut else text)


def _v(text: str) -> VersionKey:
    key = version_key(text)
    assert key is not None
    return key


V160, V170_TSNR, V180, V180_HR_STYLES = _v("1.6.0"), _v("v1.7.0-225"), _v("1.8.0"), _v("1.8.0-139")


def apply_backcompat(res: dict[str, Any]) -> None:
    """Flags A1111 sets for infotexts written by older versions."""
    ver = infotext_version(res.get("Version"))
    if ver is None:
        return
    if ver < V160 and "[" in res.get("Prompt", ""):
        res["Old prompt editing timelines"] = True
    if ver < V160 and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if ver < V170_TSNR:
        res["Downcast alphas_cumprod"] = True
    if ver < V180 and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True
