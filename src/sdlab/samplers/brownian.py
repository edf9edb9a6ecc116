"""Brownian-tree noise for the SDE samplers (DPM++ SDE, DPM++ 2M SDE (Heun), DPM++ 3M SDE), seeded as A1111 does.

A1111 builds k-diffusion's ``BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=batch_seeds)``: one
``torchsde.BrownianTree(t0=sigma_min, w0=zeros(C, H, W), t1=sigma_max, entropy=seed)`` per image seed
(torchsde defaults tol 1e-6, pool_size 24), where ``sigma_min`` / ``sigma_max`` are the smallest positive and
the largest sigma of the *full* schedule. The noise for a step ``sigma -> sigma_next`` is
``(W(hi) - W(lo)) * sign / sqrt(|sigma_next - sigma|)``, sign -1 for the usual downward step.

A1111 also replaces torchsde's internal normal draw (``brownian_interval._randn(size, dtype, device, seed)``)
by its ``randn_local(seed, size)``. For the "CPU" RNG source that is a fresh ``torch.Generator('cpu')
.manual_seed(seed)`` + ``randn`` in float32 - exactly torchsde's own draw on a CPU float32 tree - so by default
the tree is simply built on the CPU in float32 and its output moved to the latent's device and dtype: no
patching at all. Other sources (NV philox, GPU) pass ``randn_local``; torchsde calls a module-level function
from every node of the tree, which cannot be overridden per instance, so then the function is swapped in a
scoped ``try/finally`` for the duration of each tree construction and query and restored afterwards (never a
permanent global patch; not safe against *concurrent* torchsde use from another thread during those calls).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError

#: ``randn_local(seed, shape) -> Tensor``: A1111's per-seed normal draw (float32 standard normal).
RandnLocal = Callable[[int, tuple[int, ...]], Tensor]


@contextmanager
def _torchsde_randn(randn_local: RandnLocal | None) -> Iterator[None]:
    """Route torchsde's internal normal draws through ``randn_local`` while the block runs (None: untouched)."""
    if randn_local is None:
        yield
        return
    from torchsde._brownian import brownian_interval as module

    original = module._randn

    def draw(size: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int) -> Tensor:
        return randn_local(int(seed), tuple(size)).to(device=device, dtype=dtype)

    module._randn = draw
    try:
        yield
    finally:
        module._randn = original


def _sorted(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, int]:
    return (a, b, 1) if a < b else (b, a, -1)


class BrownianTreeNoise:
    """Interval noise ``noise(sigma, sigma_next) -> [B, C, H, W]`` from one Brownian tree per image seed.

    ``x``: the latent batch (shape, device, dtype of the output); ``sigma_min`` / ``sigma_max``: the tree's
    time range (> 0); ``seeds``: one int seed per image; ``randn_local``: see the module docstring;
    ``device``: where the tree lives and draws (CPU reproduces A1111's "CPU" RNG source).
    """

    def __init__(
        self,
        x: Tensor,
        sigma_min: float | Tensor,
        sigma_max: float | Tensor,
        seeds: Sequence[int],
        *,
        randn_local: RandnLocal | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        import torchsde

        if len(seeds) != x.shape[0]:
            raise InvalidRequestError(f"Brownian noise needs one seed per image: {len(seeds)} seeds for {x.shape[0]}")
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        if not 0 < float(t0) < float(t1):
            raise InvalidRequestError(f"Brownian tree needs 0 < sigma_min < sigma_max, got {float(t0)}, {float(t1)}")
        self._out = (x.device, x.dtype)
        self._randn_local = randn_local
        w0 = torch.zeros(x.shape[1:], dtype=torch.float32, device=device)
        with _torchsde_randn(randn_local):
            self._trees = [torchsde.BrownianTree(t0, w0, t1, entropy=int(s)) for s in seeds]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        s0, s1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = _sorted(s0, s1)
        with _torchsde_randn(self._randn_local), warnings.catch_warnings():
            # torchsde warns when a query end lies one ulp outside [t0, t1]; A1111 ignores it too.
            warnings.filterwarnings("ignore", message="Should have")
            w = torch.stack([tree(lo, hi) for tree in self._trees]) * sign
        w = w.to(device=self._out[0], dtype=self._out[1])
        return w / (s1 - s0).abs().sqrt().to(w.device)


def schedule_range(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """``(smallest positive sigma, largest sigma)`` of a schedule: A1111's Brownian tree range."""
    positive = sigmas[sigmas > 0]
    if positive.numel() == 0:
        raise InvalidRequestError("the sigma schedule has no positive value")
    return positive.min(), sigmas.max()
