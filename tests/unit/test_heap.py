"""``return_free_heap`` gives freed heap blocks back to the OS (glibc Linux) and changes no data."""

from __future__ import annotations

import platform

import psutil
import pytest
import torch

from sdlab.pipeline.heap import return_free_heap


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_small_blocks_leave_rss_only_after_a_trim() -> None:
    process = psutil.Process()
    blocks = [torch.ones(16 * 1024) for _ in range(6400)]  # 6400 x 64 KB: under any mmap threshold
    pin = torch.ones(16)  # allocated after them: the heap's top stays in use, so free() cannot shrink it
    keep = blocks[-1]
    del blocks
    before = process.memory_info().rss
    assert return_free_heap() is True
    after = process.memory_info().rss
    assert before - after > 100 * 2**20, (before, after)  # most of the ~400 MB freed went back
    assert torch.equal(keep, torch.ones(16 * 1024)) and torch.equal(pin, torch.ones(16))
