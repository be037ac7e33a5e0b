"""data.cache_dir through the real training entry point: the first run fills the text-embedding and
frame-latent caches, a second run reads them (the frozen encoders do not run for cached items),
and the losses match an uncached run."""

from __future__ import annotations

import csv

import pytest
import torch

from vidact.config import ConfigError, load
from vidact.tokenizers.text import TextEncoder
from vidact.tokenizers.video import VAETokenizer
from vidact.train import train

MODEL = ["model.state_dim=2", "model.action_dim=2", "model.frame_tokenizer.kind=vae",
         "model.frame_tokenizer.patch_size=2"]


def _run(robot_dataset, run_dir, cache_dir=None, steps: int = 3) -> list[dict]:
    over = [*MODEL, f"data.sources=[{{kind: lerobot, path: '{robot_dataset}'}}]", "train.batch_size=2",
            "train.log_every=1", f"train.steps={steps}", "train.checkpoint_every=100", "log.media_every=0",
            f"run_dir={run_dir}"]
    if cache_dir is not None:
        over.append(f"data.cache_dir={cache_dir}")
    train(load("debug_finetune_lerobot", over))
    with open(run_dir / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def _col(rows, name):
    return [float(r[name]) for r in rows]


def test_cache_fills_then_serves_and_losses_match(robot_dataset, tmp_path, monkeypatch):
    calls = {"vae": 0, "text": 0}
    encode_flat, encode_text = VAETokenizer._encode_flat, TextEncoder._encode_uncached

    def counting_vae(self, x):
        calls["vae"] += x.shape[0]
        return encode_flat(self, x)

    def counting_text(self, texts):
        calls["text"] += len(texts)
        return encode_text(self, texts)

    monkeypatch.setattr(VAETokenizer, "_encode_flat", counting_vae)
    monkeypatch.setattr(TextEncoder, "_encode_uncached", counting_text)

    plain = _run(robot_dataset, tmp_path / "plain")
    cache = tmp_path / "cache"
    filling = _run(robot_dataset, tmp_path / "filling", cache)
    assert _col(filling, "cache/latent_misses")[-1] > 0 and _col(filling, "cache/text_misses")[-1] >= 1
    assert any(cache.glob("latents/*/*/*.safetensors")) and any(cache.glob("text/*/*/*.safetensors"))

    before = dict(calls)
    served = _run(robot_dataset, tmp_path / "served", cache)
    # Every frame and instruction of the second run was cached: hits only, the encoders never ran
    # on training batches (the counts include the model's one-sample shape probe at start-up).
    assert _col(served, "cache/latent_misses")[-1] == 0 and _col(served, "cache/latent_hits")[-1] > 0
    assert _col(served, "cache/text_misses")[-1] == 0 and _col(served, "cache/text_hits")[-1] >= 1
    assert _col(served, "cache/latent_encoded")[-1] == 0 and _col(served, "cache/text_encoded")[-1] == 0
    probe = calls["vae"] - before["vae"]
    assert probe <= 2, f"the VAE encoded {probe} frames in the cached run"

    losses = [_col(rows, "train/loss") for rows in (plain, filling, served)]
    assert len(losses[0]) == 3
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(losses[2]), torch.tensor(losses[1]), rtol=1e-4, atol=1e-5)


def test_cotraining_mixture_caches_robot_and_web_frames(robot_dataset, tmp_path):
    """Robot windows and web clips in one batch: both name their frames, a second run reads all."""
    import json

    import numpy as np

    from vidact.data.webvideo import write_video

    videos = tmp_path / "videos"
    rng = np.random.default_rng(0)
    with open(videos.mkdir() or videos / "manifest.jsonl", "w") as f:
        for i in range(3):
            write_video(videos / f"v{i}.mp4", rng.integers(0, 255, (20, 36, 44, 3), dtype=np.uint8), fps=10)
            f.write(json.dumps({"path": f"v{i}.mp4", "caption": f"clip {i}"}) + "\n")
    sources = (f"data.sources=[{{kind: lerobot, path: '{robot_dataset}', weight: 0.5}}, "
               f"{{kind: webvideo, path: '{videos / 'manifest.jsonl'}', weight: 0.5, fit: random_crop}}]")

    def run(name):
        run_dir = tmp_path / name
        train(load("debug_cotrain_mixture", [*MODEL, sources, "train.batch_size=4", "train.log_every=1",
                                             "train.steps=2", "train.checkpoint_every=100", "log.media_every=0",
                                             f"data.cache_dir={tmp_path / 'cache'}", f"run_dir={run_dir}"]))
        with open(run_dir / "metrics.csv") as f:
            return [r for r in csv.DictReader(f) if r.get("train/loss")]

    first, second = run("first"), run("second")
    assert _col(first, "cache/latent_misses")[-1] > 0 and _col(first, "cache/text_misses")[-1] >= 2
    assert _col(second, "cache/latent_misses")[-1] == 0 and _col(second, "cache/text_misses")[-1] == 0
    assert _col(second, "cache/latent_hits")[-1] == _col(first, "cache/latent_misses")[-1]
    assert _col(second, "train/loss") == _col(first, "train/loss")
