"""The in-project frame autoencoder (issue 12): `vidact autoencoder` learns real MetaWorld frames,
its folder is a `vae_path` the frame tokenizer reads, and bad input is a one-line error."""

from __future__ import annotations

import json

import pytest
import torch

from vidact.cli import main
from vidact.tokenizers.autoencoder import AutoencoderConfig, FrameAutoencoder
from vidact.tokenizers.config import FrameTokenizerConfig
from vidact.tokenizers.video import VAETokenizer, save_vae_config


def test_autoencoder_round_trips_shapes_and_saves_exactly(tmp_path):
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(channels=3, latent_channels=4, patch=2, widths=[8, 16]))
    ae.latent_mean.uniform_(-1, 1)
    ae.latent_std.uniform_(0.5, 2)
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (5, 4, 8, 8) and ae.downsample == 4
    assert torch.allclose(ae.decode(z), ae.decode_raw(ae.encode_raw(x)), atol=1e-5)  # normalization inverts
    loaded = FrameAutoencoder.from_pretrained(ae.save_pretrained(tmp_path / "ae"))
    assert torch.equal(loaded.encode(x), ae.encode(x)) and torch.equal(loaded.decode(z), ae.decode(z))


def test_tokenizer_reads_a_vidact_autoencoder_folder(tmp_path):
    torch.manual_seed(0)
    ae = FrameAutoencoder(AutoencoderConfig(channels=3, latent_channels=4, patch=2, widths=[8, 16]))
    ae.save_pretrained(tmp_path / "ae")
    tok = VAETokenizer(FrameTokenizerConfig(kind="vae", patch_size=2, vae_path=str(tmp_path / "ae")), 3, 32, 32)
    assert tok.grid == (4, 4) and tok.tokens_per_frame == 16 and tok.token_dim == 16
    frames = torch.rand(2, 3, 3, 32, 32)  # [B,T,C,H,W]
    tokens = tok.encode(frames)
    assert tokens.shape == (2, 3, 16, 16)
    assert torch.allclose(tok.decode(tokens), ((ae.decode(ae.encode(frames.flatten(0, 1) * 2 - 1)) + 1) / 2)
                          .clamp(0, 1).reshape(2, 3, 3, 32, 32), atol=1e-5)
    # A bundle carries the definition only; built from it, the weights load into the same shapes.
    save_vae_config(FrameTokenizerConfig(kind="vae", vae_path=str(tmp_path / "ae")), tmp_path / "def")
    empty = VAETokenizer(FrameTokenizerConfig(kind="vae", patch_size=2, vae_path=str(tmp_path / "def")), 3, 32, 32,
                         weights=False)
    empty.load_state_dict(tok.state_dict())
    assert torch.equal(empty.encode(frames), tokens)


def test_autoencoder_command_learns_metaworld_frames(metaworld_dataset, tmp_path):
    out = tmp_path / "ae"
    assert main(["autoencoder", "--dataset", str(metaworld_dataset), "--out", str(out), "--height", "32",
                 "--width", "32", "--widths", "16", "32", "--latent-channels", "4", "--steps", "150",
                 "--batch-size", "16", "--lr", "3e-3"]) == 0
    metrics = json.loads((out / "autoencoder_eval.json").read_text())
    # The last episode's frames (both cameras) were never trained on; predicting their mean frame
    # scores their variance: the autoencoder must reconstruct far better than that.
    from vidact.worldmodel.autoencoder import load_frames

    _, held = load_frames([str(metaworld_dataset)], 32, 32)
    frames = torch.cat(held).float() / 255
    mean_frame_mse = float((frames - frames.mean(0)).pow(2).mean())
    assert metrics["heldout_frames"] == len(frames)
    assert metrics["mse"] < 0.5 * mean_frame_mse, (metrics, mean_frame_mse)
    assert (out / "reconstructions.png").is_file()
    tok = VAETokenizer(FrameTokenizerConfig(kind="vae", patch_size=1, vae_path=str(out)), 3, 32, 32)
    assert tok.encode(frames[:4]).shape == (4, 16, 4)  # 4x4 latents of 4 channels
    latents = tok.vae.encode(frames[:64] * 2 - 1)
    assert abs(float(latents.mean())) < 1.0 and 0.3 < float(latents.std()) < 3  # normalized per channel


@pytest.mark.parametrize("args, words", [
    (["--dataset", "/nonexistent/data"], "is not a LeRobot dataset"),
    (["--height", "30"], "not divisible by the downsampling 8"),
])
def test_autoencoder_bad_input_is_one_line(metaworld_dataset, tmp_path, capsys, args, words):
    argv = ["autoencoder", "--dataset", str(metaworld_dataset), "--out", str(tmp_path / "ae"), "--steps", "1", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact autoencoder: error:") and words in err and "\n" not in err, err
    assert not (tmp_path / "ae").exists()
