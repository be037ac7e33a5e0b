"""On-disk caches so large runs do not re-encode: frame latents (``vae`` tokenizer) and text
embeddings (frozen text encoder).

Both are content-addressed stores of tensors. A key is a tuple of strings and numbers that
identifies the input (e.g. dataset, episode, camera, frame index) and a ``namespace`` names the
encoder that produced the value (weights path, resolution, max length): changing the encoder
changes the namespace, so stale latents are never read back. Entries are safetensors files
written atomically (temp file + rename), so several dataloader workers or ranks can fill the same
cache concurrently; the worst case is one value encoded twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

Key = tuple


class TensorCache:
    """``namespace/ab/abcdef....safetensors`` files, one per key, each holding named tensors."""

    def __init__(self, root: str | Path, namespace: str):
        if not namespace:
            raise ValueError("a cache namespace (which encoder made the values) is required")
        self.root = Path(root) / _digest(namespace)[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        info = self.root / "namespace.json"
        if not info.exists():
            _atomic_write_bytes(info, json.dumps({"namespace": namespace}).encode())
        self.hits = self.misses = 0

    def path(self, key: Key) -> Path:
        digest = _digest(json.dumps(list(key), default=str))
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get(self, key: Key) -> dict[str, Tensor] | None:
        from safetensors.torch import load_file

        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return load_file(path)

    def put(self, key: Key, tensors: dict[str, Tensor]) -> None:
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        _atomic_write_bytes(self.path(key), data)

    def get_or_compute(self, keys: Sequence[Key], compute: Callable[[list[int]], list[dict[str, Tensor]]]
                       ) -> list[dict[str, Tensor]]:
        """Values for ``keys``; ``compute(missing_positions)`` encodes only the ones not cached
        (in one batch) and they are stored for next time."""
        out: list[dict[str, Tensor] | None] = [self.get(k) for k in keys]
        missing = [i for i, v in enumerate(out) if v is None]
        if missing:
            for i, value in zip(missing, compute(missing)):
                self.put(keys[i], value)
                out[i] = value
        return out  # type: ignore[return-value]


class LatentCache(TensorCache):
    """Frame latents keyed by (source, episode or video, camera, frame index or timestamp)."""

    def latents(self, keys: Sequence[Key], frames: Callable[[list[int]], Tensor],
                encode: Callable[[Tensor], Tensor]) -> Tensor:
        """[N, ...] latents for ``keys``; ``frames(missing)`` loads [M,C,H,W] for the missing ones
        and ``encode`` turns them into latents, stored one per key."""
        def compute(missing: list[int]) -> list[dict[str, Tensor]]:
            with torch.no_grad():
                z = encode(frames(missing))
            return [{"latent": z[j]} for j in range(len(missing))]

        return torch.stack([v["latent"] for v in self.get_or_compute(keys, compute)])


class TextEmbeddingCache(TensorCache):
    """Instruction embeddings [L,E] (unpadded) keyed by the string."""

    def embeddings(self, texts: Iterable[str], encode: Callable[[list[str]], list[Tensor]]) -> list[Tensor]:
        texts = list(texts)

        def compute(missing: list[int]) -> list[dict[str, Tensor]]:
            with torch.no_grad():
                return [{"embedding": e} for e in encode([texts[i] for i in missing])]

        return [v["embedding"] for v in self.get_or_compute([(t,) for t in texts], compute)]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
