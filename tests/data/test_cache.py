"""Frame-latent and text-embedding caches: values come back exactly, encoders run only on misses."""

from __future__ import annotations

import torch

from vidact.data.cache import LatentCache, TextEmbeddingCache


def test_latents_encoded_once_and_read_back(tmp_path):
    calls = []

    def frames(missing):
        calls.append(list(missing))
        return torch.stack([torch.full((3, 8, 8), float(i)) for i in missing])

    def encode(x):  # a stand-in for the VAE's encoder: a deterministic function of the frames
        return x[:, :, ::2, ::2] * 2

    cache = LatentCache(tmp_path, namespace="vae:/weights/v1@64x64")
    keys = [("mw", 0, "observation.image", t) for t in range(4)]
    first = cache.latents(keys, frames, encode)
    assert first.shape == (4, 3, 4, 4) and calls == [[0, 1, 2, 3]]
    again = LatentCache(tmp_path, namespace="vae:/weights/v1@64x64").latents(keys + [("mw", 0, "x", 9)],
                                                                             frames, encode)
    assert calls[-1] == [4]  # only the new key was encoded
    assert torch.equal(again[:4], first)
    other = LatentCache(tmp_path, namespace="vae:/weights/v2@64x64")  # another encoder: nothing reused
    other.latents(keys[:1], frames, encode)
    assert calls[-1] == [0] and other.misses == 1


def test_text_embeddings_cached_per_string(tmp_path):
    seen = []

    def encode(texts):
        seen.extend(texts)
        return [torch.randn(len(t), 5) for t in texts]

    cache = TextEmbeddingCache(tmp_path, namespace="tiny_t5:max_length=32")
    a = cache.embeddings(["open the drawer", "press the button"], encode)
    b = cache.embeddings(["press the button", "open the drawer"], encode)
    assert seen == ["open the drawer", "press the button"]
    assert torch.equal(a[0], b[1]) and a[0].shape == (15, 5)
    assert cache.hits == 2
