"""A bundle trained with a T5 text encoder and a VAE frame tokenizer from local folders carries
their definitions (config, tokenizer files; the weights are in model.safetensors): with those
folders and the run deleted, a fresh process loads it and acts exactly as before (issue 16, part 4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidact.cli import main
from vidact.deploy.policy import Policy
from vidact.tokenizers.config import FrameTokenizerConfig, TextEncoderConfig
from vidact.tokenizers.text import TextEncoder
from vidact.tokenizers.video import VAETokenizer, tiny_vae_config

TASK = "slide the square left"
# A T5 tokenizer with a real vocabulary (a tokenizer.json), unlike ByT5's built-in bytes: if its
# files did not travel, the bundle could not tokenize.
VOCAB = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
         + [(f"\u2581{w}", -2.0) for w in ("slide", "the", "square", "left", "right", "up", "down")]
         + [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz"])

# Run in a fresh process: load the bundle, act, and report what the components compute.
ACT = """
import sys, numpy as np, torch
from vidact.deploy.policy import Policy
policy = Policy.from_pretrained(sys.argv[1])
obs, task = np.load(sys.argv[2]), sys.argv[4]
emb, _ = policy.model.text_encoder([task])
latents = policy.model.frame_tokenizer.encode(torch.from_numpy(obs["frame"]))
chunk = policy.predict_chunk({"observation.image": obs["image"], "observation.state": obs["state"], "task": task})
# The same bundle through the LeRobot plugin (what lerobot-eval loads).
import vidact.deploy.lerobot_plugin
from vidact.deploy.lerobot_plugin.modeling_vidact import VidActPolicy
lerobot = VidActPolicy.from_pretrained(sys.argv[1]).deploy.predict_chunk(
    {"observation.image": obs["image"], "observation.state": obs["state"], "task": task})
np.savez(sys.argv[3], actions=chunk.actions, text=emb.numpy(), latents=latents.numpy(), lerobot=lerobot.actions)
"""


@pytest.fixture(scope="module")
def components(tmp_path_factory) -> dict[str, Path]:
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    root = tmp_path_factory.mktemp("components")
    tokenizer = T5Tokenizer(vocab=VOCAB, extra_ids=0)
    tokenizer.save_pretrained(root / "t5")
    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                            feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
                   ).save_pretrained(root / "t5")
    AutoencoderKL(**tiny_vae_config(channels=1)).save_pretrained(root / "vae")
    return {"t5": root / "t5", "vae": root / "vae"}


@pytest.fixture(scope="module")
def bundle(components, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("self_contained")
    run, out = root / "run", root / "bundle"
    assert main(["train", "debug_sliding_square", "model.text_encoder.kind=t5",
                 f"model.text_encoder.path={components['t5']}", "model.frame_tokenizer.kind=vae",
                 f"model.frame_tokenizer.vae_path={components['vae']}", "model.frame_tokenizer.patch_size=2",
                 "train.steps=2", "train.batch_size=4", "train.warmup_steps=1", f"run_dir={run}"]) == 0
    assert main(["export", str(run), str(out)]) == 0
    return out


def test_bundle_holds_the_definitions_not_the_paths(bundle, components):
    assert sorted(p.name for p in (bundle / "text_encoder").iterdir()) == ["config.json", "tokenizer.json",
                                                                           "tokenizer_config.json"]
    assert sorted(p.name for p in (bundle / "vae").iterdir()) == ["config.json"]
    network = json.loads((bundle / "config.json").read_text())["vidact"]
    assert network["text_encoder"]["path"] == "text_encoder" and network["frame_tokenizer"]["vae_path"] == "vae"
    info = json.loads((bundle / "vidact_policy.json").read_text())
    assert info["components"] == {"text_encoder": "text_encoder", "vae": "vae"}
    assert info["source"]["components"]["text_encoder"] == str(components["t5"])  # provenance only


def test_loads_and_acts_the_same_in_a_fresh_process_without_the_training_folders(bundle, components, tmp_path):
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), "state": rng.normal(size=2).astype(np.float32),
           "frame": rng.random((1, 1, 16, 16), dtype=np.float32)}
    np.savez(tmp_path / "obs.npz", **obs)

    policy = Policy.from_pretrained(bundle)
    before = policy.predict_chunk({"observation.image": obs["image"], "observation.state": obs["state"], "task": TASK})
    text, _ = policy.model.text_encoder([TASK])
    latents = policy.model.frame_tokenizer.encode(torch.from_numpy(obs["frame"]))
    # The bundle's components compute what the training-time ones (weights from their folders) did.
    trained_text, _ = TextEncoder(TextEncoderConfig(kind="t5", path=str(components["t5"])))([TASK])
    trained_vae = VAETokenizer(FrameTokenizerConfig(kind="vae", patch_size=2, vae_path=str(components["vae"])), 1, 16, 16)
    assert text.shape[1] == 5  # "▁slide ▁the ▁square ▁left </s>": the vocabulary's own tokens
    assert torch.equal(text, trained_text) and torch.equal(latents, trained_vae.encode(torch.from_numpy(obs["frame"])))

    shutil.rmtree(components["t5"])
    shutil.rmtree(components["vae"])
    shutil.rmtree(bundle.parent / "run")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", ACT, str(bundle), str(tmp_path / "obs.npz"), str(tmp_path / "after.npz"),
                    TASK], check=True, env=env, cwd=tmp_path, timeout=600)
    after = np.load(tmp_path / "after.npz")
    assert np.array_equal(after["actions"], before.actions) and np.array_equal(after["lerobot"], before.actions)
    # The encoders' outputs to rounding: the fresh process runs one thread, this one two, and on a
    # loaded machine the BLAS library may split its sums differently (seen: 1e-7 apart, actions equal).
    np.testing.assert_allclose(after["text"], text.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(after["latents"], latents.numpy(), rtol=0, atol=1e-5)


def test_a_bundle_carries_vidacts_own_autoencoder(tmp_path):
    """``vidact autoencoder``'s folder as the frame tokenizer: the bundle holds its definition, the
    weights travel in model.safetensors, and it loads with the folder gone."""
    from vidact.tokenizers.autoencoder import AUTOENCODER_CONFIG, AutoencoderConfig, FrameAutoencoder

    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(channels=1, latent_channels=4, patch=2, widths=[8, 16]))
    ae.latent_std.fill_(0.5)
    ae.save_pretrained(tmp_path / "ae")
    run, out = tmp_path / "run", tmp_path / "bundle"
    assert main(["train", "debug_sliding_square", "model.frame_tokenizer.kind=vae",
                 f"model.frame_tokenizer.vae_path={tmp_path / 'ae'}", "model.frame_tokenizer.patch_size=2",
                 "train.steps=2", "train.batch_size=4", "train.warmup_steps=1", f"run_dir={run}"]) == 0
    assert main(["export", str(run), str(out)]) == 0
    assert sorted(p.name for p in (out / "vae").iterdir()) == [AUTOENCODER_CONFIG]
    frame = torch.rand(2, 1, 16, 16)
    expected = ae.encode(frame * 2 - 1)
    shutil.rmtree(tmp_path / "ae")
    policy = Policy.from_pretrained(out)
    tokenizer = policy.model.frame_tokenizer
    assert isinstance(tokenizer.vae, FrameAutoencoder)
    assert torch.allclose(tokenizer.vae.encode(frame * 2 - 1), expected, atol=1e-6)
    chunk = policy.predict_chunk({"observation.image": np.zeros((16, 16, 1), np.uint8),
                                  "observation.state": np.zeros(2, np.float32), "task": TASK})
    assert np.isfinite(chunk.actions).all()
