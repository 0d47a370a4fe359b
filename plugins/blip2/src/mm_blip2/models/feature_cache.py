"""Cache of the frozen image path's outputs (vision tower -> ``ln_vision`` -> Q-Former queries).

When the vision tower, ``ln_vision``, the Q-Former and the query tokens are all frozen, the
query outputs of an image depend only on the image tensor the model receives — the decoded
image after its transform. The cache keys each image by a digest of that tensor (bytes, shape,
dtype), so "the same image under the same transform" is exactly what hits: with the eval
transform (deterministic), epoch 2 onwards skips the tower; with a random train transform keys
never repeat and the cache only costs hashing (use the eval transform for training with it).

It is invalidated when the frozen weights change: a fingerprint of every parameter and buffer of
those modules (storage, in-place version counter, ``requires_grad``, dtype, device) is compared
on each use, so ``load_state_dict``, ``load_checkpoint``, ``.to()`` or an in-place update under
``no_grad`` all empty it. Writes through ``.data`` bypass version counters: call :meth:`clear`
after such edits. When any of those modules trains, the cache steps aside (nothing is cached).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)


class FrozenFeatureCache:
    """``image digest -> query outputs`` for frozen image encoders, bounded by ``max_items``."""

    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = int(max_items)
        self._store: dict[bytes, torch.Tensor] = {}
        self._fingerprint: tuple | None = None
        self.hits = 0
        self.misses = 0
        self._warned = False

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
        self._fingerprint = None

    @staticmethod
    def fingerprint(modules: Iterable[nn.Module | torch.Tensor]) -> tuple:
        """Identity and version of every tensor of ``modules`` (cheap: no data is read)."""
        parts = []
        for module in modules:
            tensors = [module] if isinstance(module, torch.Tensor) else [*module.parameters(), *module.buffers()]
            for t in tensors:
                parts.append((t.data_ptr(), t._version, t.requires_grad, t.dtype, str(t.device)))
        return tuple(parts)

    def usable(self, modules: list[nn.Module | torch.Tensor]) -> bool:
        """Whether the cache applies now (all frozen); empties it when the weights changed."""
        fingerprint = self.fingerprint(modules)
        if any(part[2] for part in fingerprint):  # something trains: its outputs change every step
            if not self._warned:
                log.warning("cache_image_features is on but the vision tower / Q-Former train: not caching")
                self._warned = True
            self.clear()
            return False
        if fingerprint != self._fingerprint:
            if self._store:
                log.info("frozen image-encoder weights changed: image feature cache emptied")
            self._store.clear()
            self._fingerprint = fingerprint
        return True

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        """Digest of one transformed image tensor (content, shape, dtype)."""
        data = image.detach().contiguous().cpu()
        digest = hashlib.blake2b(digest_size=16)
        digest.update(str((tuple(data.shape), data.dtype)).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        return digest.digest()

    def lookup(self, images: torch.Tensor, compute) -> torch.Tensor:  # noqa: ANN001
        """Outputs for ``images`` (N, ...): cached ones reused, the others from ``compute(subset)``."""
        keys = [self.key(image) for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        fresh = {}
        if missing:
            with torch.no_grad():
                computed = compute(images[missing])
            for i, row in zip(missing, computed):
                fresh[keys[i]] = row
                if len(self._store) < self.max_items:
                    self._store[keys[i]] = row
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([fresh[k] if k in fresh else self._store[k] for k in keys])
