"""On-disk caches so large runs do not re-encode: frame latents (``vae`` tokenizer) and text
embeddings (frozen text encoder).

Both are content-addressed stores of tensors. A key is a tuple of strings and numbers that
identifies the input (e.g. dataset, episode, camera, frame index) and a ``namespace`` names the
encoder that produced the value (weights path, resolution, max length): changing the encoder
changes the namespace, so stale latents are never read back. Entries are safetensors files
written atomically (temp file + rename), so several dataloader workers or ranks can fill the same
cache concurrently; the worst case is one value encoded twice.

How training uses them (``data.cache_dir``; :func:`attach_model_caches` from ``VidActModule``):
- text: the frozen text encoder looks each distinct instruction up under
  ``cache_dir/text/<namespace>`` (namespace: encoder kind, weights fingerprint, max length) and
  encodes only the ones not there, so across runs and ranks the encoder runs once per string;
- latents (``vae`` frame tokenizer): with a cache dir the loader names every frame
  (``Batch.frame_keys``: robot dataset + episode + frame index + camera + fit; web file +
  timestamp + fit/crop), and :func:`with_cached_latents` reads those frames' latent tokens from
  ``cache_dir/latents/<namespace>`` (namespace: VAE weights fingerprint, resolution, patch size)
  into the batch (``Batch.obs_frame_latents``, ``future_frame_latents``), which the model uses
  instead of running the VAE. Frames without keys (generated data, sampling, media) are encoded as
  usual. Only frozen encoders are cached (a trainable one raises).
Counters (``cache/*_hits``, ``*_misses``, ``*_encoded``) are logged every step (this rank's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)

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
        if path.is_file():
            try:
                value = load_file(path)
            except Exception as e:  # an unreadable entry is re-encoded and overwritten, never fatal
                log.warning("cache entry %s is unreadable (%s: %s); re-encoding it", path, type(e).__name__, e)
            else:
                self.hits += 1
                return value
        self.misses += 1
        return None

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
                encode: Callable[[Tensor], Tensor], device: torch.device | str | None = None) -> Tensor:
        """[N, ...] latents for ``keys`` (on ``device``; default: where they were read or encoded);
        ``frames(missing)`` loads [M,C,H,W] for the missing ones and ``encode`` turns them into
        latents, stored one per key."""
        def compute(missing: list[int]) -> list[dict[str, Tensor]]:
            with torch.no_grad():
                z = encode(frames(missing))
            return [{"latent": z[j]} for j in range(len(missing))]

        values = [v["latent"] for v in self.get_or_compute(keys, compute)]
        device = device if device is not None else values[0].device
        return torch.stack([v.to(device) for v in values])


class TextEmbeddingCache(TensorCache):
    """Instruction embeddings [L,E] (unpadded) keyed by the string."""

    def embeddings(self, texts: Iterable[str], encode: Callable[[list[str]], list[Tensor]]) -> list[Tensor]:
        texts = list(texts)

        def compute(missing: list[int]) -> list[dict[str, Tensor]]:
            with torch.no_grad():
                return [{"embedding": e} for e in encode([texts[i] for i in missing])]

        return [v["embedding"] for v in self.get_or_compute([(t,) for t in texts], compute)]


def folder_fingerprint(path: str | Path) -> str:
    """Identity of a local weights folder (or file) for a cache namespace: its resolved path and
    the name, size and modification time of every file in it. Replacing the weights changes it;
    reading gigabytes of weights to hash them would not pay off at start-up."""
    path = Path(path).expanduser().resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns)
             for p in files]
    return f"{path}#{_digest(json.dumps(stats))[:16]}"


def module_fingerprint(module: torch.nn.Module) -> str:
    """Identity of in-memory weights (random test encoders): a digest of every tensor's bytes."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name unique to this writer (host, process, random), then rename: a
    reader sees the old file or the whole new one, and concurrent writers (dataloader workers,
    ranks, nodes on a shared file system) never interleave bytes; the last rename wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------- wiring into a model


def attach_model_caches(model, root: str | Path) -> list[str]:
    """Attach on-disk caches under ``root`` (``data.cache_dir``) to a VidAct's frozen encoders:
    the text encoder's embeddings, and the ``vae`` frame tokenizer's latents. Returns the names
    of the caches attached ("text", "latents"); a trainable encoder raises ``ValueError``."""
    attached = []
    if getattr(model, "text_encoder", None) is not None:
        model.text_encoder.attach_cache(root)
        attached.append("text")
    if hasattr(model.frame_tokenizer, "attach_cache"):
        model.frame_tokenizer.attach_cache(root)
        attached.append("latents")
    return attached


def with_cached_latents(model, batch, observed: bool = True):
    """``batch`` with the frame tokenizer's tokens of its frames (``Batch.obs_frame_latents``,
    ``future_frame_latents``) read from the latent cache by ``batch.frame_keys``, the frames not
    there yet encoded and stored; ``batch`` itself without a latent cache or frame keys. The
    observed frames only when ``observed`` and the model reads them through the frame tokenizer
    (not an ``obs_encoder``) or predicts frames as a change from the last one (``model.video_residual``):
    the training loss noises them when ``generative.history_noise`` > 0."""
    import dataclasses

    tokenizer = model.frame_tokenizer
    keys = batch.frame_keys
    if getattr(tokenizer, "latent_cache", None) is None or keys is None:
        return batch
    Th = batch.obs_frames.shape[1]
    obs = future = None
    if observed and (model.obs_encoder is None or (model.config.video_residual and model.future_tokens)):
        obs = tokenizer.encode_cached(batch.obs_frames, [k[:Th] for k in keys])
    if batch.future_frames is not None:
        future = tokenizer.encode_cached(batch.future_frames, [k[Th:] for k in keys])
    return dataclasses.replace(batch, obs_frame_latents=obs, future_frame_latents=future)


def cache_metrics(model) -> dict[str, float]:
    """Cumulative hit / miss / encoded counters of the caches attached to ``model`` (this rank)."""
    out = {}
    text = getattr(model, "text_encoder", None)
    if text is not None and getattr(text, "disk_cache", None) is not None:
        out.update({"cache/text_hits": text.disk_cache.hits, "cache/text_misses": text.disk_cache.misses,
                    "cache/text_encoded": text.texts_encoded})
    frames = model.frame_tokenizer
    if getattr(frames, "latent_cache", None) is not None:
        out.update({"cache/latent_hits": frames.latent_cache.hits, "cache/latent_misses": frames.latent_cache.misses,
                    "cache/latent_encoded": frames.frames_encoded})
    return {k: float(v) for k, v in out.items()}
