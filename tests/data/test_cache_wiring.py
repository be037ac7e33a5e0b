"""The caches as the encoders use them: keyed VAE latents, text embeddings across encoder
instances, frozen-only, concurrent writers, and the frame keys the loaders attach."""

from __future__ import annotations

import multiprocessing as mp
from types import SimpleNamespace

import pytest
import torch

from vidact.data.cache import TensorCache, with_cached_latents
from vidact.tokenizers.config import FrameTokenizerConfig, TextEncoderConfig
from vidact.tokenizers.text import TextEncoder
from vidact.tokenizers.video import VAETokenizer
from vidact.types import Batch


def _vae(tmp_path=None, **kw) -> VAETokenizer:
    tok = VAETokenizer(FrameTokenizerConfig(kind="vae", patch_size=2, **kw), channels=3, height=16, width=16)
    if tmp_path is not None:
        tok.attach_cache(tmp_path)
    return tok


def _batch(B=2, Th=2, Tf=1, V=2) -> Batch:
    g = torch.Generator().manual_seed(0)
    keys = [[[f"s{b}|t{t}|v{v}" for v in range(V)] for t in range(Th + Tf)] for b in range(B)]
    keys[1][0] = list(keys[0][0])  # a frame two samples share (same key, same pixels) is encoded once
    obs = torch.rand(B, Th, V, 3, 16, 16, generator=g)
    obs[1, 0] = obs[0, 0]
    return Batch(obs_frames=obs, future_frames=torch.rand(B, Tf, V, 3, 16, 16, generator=g),
                 state=torch.zeros(B, Th, 2), text=["a"] * B, frame_keys=keys)


def test_keyed_latents_match_plain_encoding_and_are_read_back(tmp_path):
    plain = _vae()
    batch = _batch()
    expected_obs, expected_future = plain.encode(batch.obs_frames), plain.encode(batch.future_frames)

    tok = _vae(tmp_path)
    batch = with_cached_latents(SimpleNamespace(frame_tokenizer=tok, obs_encoder=None), batch)
    obs, future = batch.obs_frame_latents, batch.future_frame_latents
    torch.testing.assert_close(obs, expected_obs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(future, expected_future, rtol=1e-5, atol=1e-5)
    assert tok.latent_cache.misses == 10 and tok.frames_encoded == 10  # 12 frames, 2 shared

    again = _vae(tmp_path)  # a new run: same VAE, same namespace
    Th = batch.obs_frames.shape[1]
    assert torch.equal(again.encode_cached(batch.obs_frames, [k[:Th] for k in batch.frame_keys]), obs)
    assert torch.equal(again.encode_cached(batch.future_frames, [k[Th:] for k in batch.frame_keys]), future)
    assert again.latent_cache.hits == 10 and again.frames_encoded == 0
    again.encode(batch.obs_frames)  # without keys: the VAE runs, the cache is not consulted
    assert again.frames_encoded == 8 and again.latent_cache.hits == 10

    other = _vae(tmp_path, vae_tiny_seed=1)  # other weights: another namespace, nothing reused
    other.encode_cached(batch.obs_frames, [k[:Th] for k in batch.frame_keys])
    assert other.latent_cache.hits == 0 and other.identity() != tok.identity()


def test_frame_keys_must_match_the_frames(tmp_path):
    tok, batch = _vae(tmp_path), _batch()
    batch.frame_keys[0] = [t[:1] for t in batch.frame_keys[0]]  # one view named instead of two
    with pytest.raises(ValueError, match="frame_keys"):
        with_cached_latents(SimpleNamespace(frame_tokenizer=tok, obs_encoder=None), batch)


def test_only_frozen_encoders_are_cached(tmp_path):
    tok = _vae()
    tok.vae.decoder.requires_grad_(True)
    with pytest.raises(ValueError, match="trainable"):
        tok.attach_cache(tmp_path)
    text = TextEncoder(TextEncoderConfig(kind="tiny_t5"))
    next(text.encoder.parameters()).requires_grad_(True)
    with pytest.raises(ValueError, match="trainable"):
        text.attach_cache(tmp_path)


def test_text_embeddings_shared_across_encoder_instances(tmp_path):
    first = TextEncoder(TextEncoderConfig(kind="tiny_t5", max_length=16))
    first.attach_cache(tmp_path)
    emb, mask = first(["open the drawer", "press the button", "open the drawer"])
    assert first.texts_encoded == 2 and first.disk_cache.misses == 2

    second = TextEncoder(TextEncoderConfig(kind="tiny_t5", max_length=16))
    second.attach_cache(tmp_path)
    emb2, mask2 = second(["open the drawer", "press the button", "open the drawer"])
    assert second.texts_encoded == 0 and second.disk_cache.hits == 2
    assert torch.equal(emb, emb2) and torch.equal(mask, mask2)

    longer = TextEncoder(TextEncoderConfig(kind="tiny_t5", max_length=8))  # other settings, other namespace
    longer.attach_cache(tmp_path)
    longer(["open the drawer"])
    assert longer.texts_encoded == 1


def _writer(args):
    root, worker = args
    cache = TensorCache(root, namespace="concurrent")
    for i in range(40):
        cache.put(("frame", i), {"latent": torch.full((64, 64), float(i))})
        value = cache.get(("frame", (i * 7 + worker) % 40))
        if value is not None:  # whatever a reader sees is a whole, correct entry
            assert torch.equal(value["latent"], torch.full((64, 64), float((i * 7 + worker) % 40)))
    return worker


def test_concurrent_writers_leave_whole_entries(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        assert sorted(pool.map(_writer, [(str(tmp_path), w) for w in range(4)])) == [0, 1, 2, 3]
    cache = TensorCache(tmp_path, namespace="concurrent")
    for i in range(40):
        assert torch.equal(cache.get(("frame", i))["latent"], torch.full((64, 64), float(i)))
    assert not list(tmp_path.rglob("*.tmp"))


def test_web_clips_name_their_frames(tmp_path):
    import numpy as np

    from vidact.data.webvideo import VideoEntry, WebVideoDataset, write_video
    from vidact.models.configuration import VidActConfig

    write_video(tmp_path / "a.mp4", np.random.default_rng(0).integers(0, 255, (30, 40, 48, 3), dtype=np.uint8), fps=10)
    cfg = VidActConfig(height=16, width=16, history=2, future_frames=1, future_frame_stride=1, chunk_length=4, views=2)
    ds = WebVideoDataset([VideoEntry(str(tmp_path / "a.mp4"), "clip")], cfg, fps=5.0, fit="random_crop")
    assert "frame_keys" not in ds[0]
    ds.frame_keys = True
    keys = ds[0]["frame_keys"]
    assert len(keys) == 3 and all(len(t) == 2 and t[0] == t[1] for t in keys)  # [Th+Tf][V]: one camera
    assert keys == ds[0]["frame_keys"] and "a.mp4" in keys[0][0] and "random_crop:" in keys[0][0]
    ds.set_epoch(1)  # a new pass draws a new clip (start and crop): new names
    assert ds[0]["frame_keys"] != keys


def test_the_model_reads_the_batch_latents_and_a_noised_history_drops_them(tmp_path):
    """Latents travel as batch fields (issue 16, part 5): the network uses them instead of the
    VAE, and the loss drops the observed ones when it noises the history frames."""
    import dataclasses

    from vidact.generative import GenerativeConfig, training_loss
    from vidact.models import VidAct, VidActConfig

    torch.manual_seed(0)
    model = VidAct(VidActConfig(flavor="tiny", height=16, width=16, history=2, future_frames=1, views=2,
                                chunk_length=4, state_dim=2, action_dim=2,
                                frame_tokenizer=FrameTokenizerConfig(kind="vae", patch_size=2))).eval()
    with torch.no_grad():  # non-zero output heads and adaLN: the loss depends on the observed tokens
        for p in model.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(std=0.05)
    model.frame_tokenizer.attach_cache(tmp_path)
    batch = dataclasses.replace(_batch(), actions=torch.zeros(2, 4, 2))
    cached = with_cached_latents(model, batch)
    assert cached.obs_frame_latents.shape == (2, 2, 2, model.tokens_per_frame, model.latent_dim)

    def loss(b: Batch, **generative) -> torch.Tensor:
        return training_loss(model, b, GenerativeConfig(**generative), torch.Generator().manual_seed(0)).loss

    torch.testing.assert_close(loss(cached), loss(batch), rtol=1e-5, atol=1e-6)
    # The fields are what the model reads: stale ones change the loss.
    stale_obs = dataclasses.replace(cached, obs_frame_latents=torch.zeros_like(cached.obs_frame_latents))
    assert not torch.allclose(loss(stale_obs), loss(batch))
    stale_future = dataclasses.replace(cached, future_frame_latents=torch.zeros_like(cached.future_frame_latents))
    assert not torch.allclose(loss(stale_future), loss(batch))
    # A noised history is encoded from its noised frames, whatever obs_frame_latents held.
    torch.testing.assert_close(loss(stale_obs, history_noise=0.1), loss(batch, history_noise=0.1))
    assert with_cached_latents(model, batch, observed=False).obs_frame_latents is None
