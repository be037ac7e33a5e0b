import pytest
import torch

from vidact.models.configuration import FrameTokenizerConfig, ObsEncoderConfig, TextEncoderConfig
from vidact.tokenizers.action import Normalizer
from vidact.tokenizers.text import TextEncoder, tiny_t5_config
from vidact.tokenizers.video import PatchTokenizer, TimmObsEncoder, VAETokenizer, patchify, tiny_vae_config, unpatchify


def test_patchify_is_row_major_and_exactly_invertible():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float).view(2, 3, 8, 12)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    # Token 1 is the second patch of the first row: columns 4..7 of rows 0..3, channel-major.
    assert torch.equal(tokens[0, 1].view(3, 4, 4), x[0, :, 0:4, 4:8])
    assert torch.equal(unpatchify(tokens, 4, 3, 8, 12), x)


def test_patch_tokenizer_round_trip_and_bad_size():
    tok = PatchTokenizer(3, 32, 48, 8)
    frames = torch.rand(2, 2, 1, 3, 32, 48)
    tokens = tok.encode(frames)
    assert tokens.shape == (2, 2, 1, 24, 192) and tokens.min() >= -1 and tokens.max() <= 1
    assert torch.allclose(tok.decode(tokens), frames, atol=1e-6)
    with pytest.raises(ValueError, match="patch_size=7 must divide the frame size 32x48"):
        PatchTokenizer(3, 32, 48, 7)


def test_vae_tokenizer_loads_a_local_autoencoder_and_round_trips_shapes(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(**tiny_vae_config()).save_pretrained(tmp_path / "vae")
    tok = VAETokenizer(FrameTokenizerConfig(kind="vae", patch_size=2, vae_path=str(tmp_path / "vae")), 3, 32, 32)
    assert tok.grid == (8, 8) and tok.token_dim == 16 and not any(p.requires_grad for p in tok.parameters())
    frames = torch.rand(2, 1, 1, 3, 32, 32)
    tokens = tok.encode(frames)
    assert tokens.shape == (2, 1, 1, 64, 16)
    out = tok.decode(tokens)
    assert out.shape == frames.shape and out.min() >= 0 and out.max() <= 1
    # The loaded weights are the saved ones, not a fresh random init.
    ref = AutoencoderKL.from_pretrained(tmp_path / "vae")
    assert torch.equal(ref.encoder.conv_in.weight, tok.vae.encoder.conv_in.weight)
    with pytest.raises(FileNotFoundError, match="vae_path"):
        VAETokenizer(FrameTokenizerConfig(kind="vae", vae_path=str(tmp_path / "nope")), 3, 32, 32)


def test_timm_obs_encoder_loads_weights_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet18", num_classes=0)
    save_file(src.state_dict(), tmp_path / "resnet18.safetensors")
    enc = TimmObsEncoder(ObsEncoderConfig(kind="timm", timm_name="resnet18",
                                          weights_path=str(tmp_path / "resnet18.safetensors")), 3, 64, 64)
    assert torch.equal(enc.backbone.conv1.weight, src.conv1.weight)
    tokens = enc.encode(torch.rand(2, 1, 1, 3, 64, 64))
    assert tokens.shape == (2, 1, 1, 4, 512) and enc.tokens_per_frame == 4
    with pytest.raises(FileNotFoundError, match="weights_path"):
        TimmObsEncoder(ObsEncoderConfig(kind="timm", weights_path=str(tmp_path / "missing.pth")), 3, 64, 64)


def test_text_encoder_pads_masks_and_caches():
    enc = TextEncoder(TextEncoderConfig(kind="tiny_t5", max_length=16))
    emb, mask = enc(["open the drawer", "hi", "open the drawer"])
    assert emb.shape[0] == 3 and emb.shape[2] == enc.out_dim == 32
    assert mask[1].sum() < mask[0].sum()  # shorter text, fewer real tokens
    assert torch.equal(emb[0], emb[2])
    assert len(enc._cache) == 2
    calls = []
    enc._encode_uncached = lambda texts: calls.append(texts)  # noqa: E731 - prove the cache is used
    enc(["hi", "open the drawer"])
    assert calls == []


def test_text_encoder_from_a_local_t5_folder(tmp_path):
    from transformers import ByT5Tokenizer, T5EncoderModel

    T5EncoderModel(tiny_t5_config()).save_pretrained(tmp_path / "t5")
    ByT5Tokenizer().save_pretrained(tmp_path / "t5")
    enc = TextEncoder(TextEncoderConfig(kind="t5", path=str(tmp_path / "t5")))
    emb, mask = enc(["pick up the cube"])
    assert emb.shape == (1, int(mask.sum()), 32)
    with pytest.raises(FileNotFoundError, match="text_encoder.path"):
        TextEncoder(TextEncoderConfig(kind="t5", path=str(tmp_path / "missing")))


@pytest.mark.parametrize("mode", ["mean_std", "quantile"])
def test_normalizer_exact_inverse_and_constant_dimension(mode):
    torch.manual_seed(0)
    data = torch.randn(1000, 3) * torch.tensor([5.0, 0.1, 0.0]) + torch.tensor([1.0, -2.0, 7.0])
    stats = {"mean": data.mean(0), "std": data.std(0), "q01": data.quantile(0.01, 0), "q99": data.quantile(0.99, 0)}
    norm = Normalizer(state_dim=3, action_dim=3, mode=mode)
    norm.set_stats({"state": stats, "action": stats})
    x = norm.normalize("action", data)
    assert torch.isfinite(x).all()
    assert torch.allclose(norm.unnormalize("action", x), data, atol=1e-5)
    assert torch.allclose(x[:, 2], torch.zeros(1000), atol=1e-5)  # constant dim: offset removed, scale 1
    if mode == "mean_std":
        assert torch.allclose(x[:, :2].std(0), torch.ones(2), atol=1e-3)
    else:
        assert x[:, :2].quantile(0.99, 0).sub(1).abs().max() < 1e-3
    assert bool(norm.has_stats)


def test_normalizer_names_what_is_missing():
    norm = Normalizer(2, 2, "quantile")
    with pytest.raises(KeyError, match="missing 'action'"):
        norm.set_stats({"state": {"q01": [0, 0], "q99": [1, 1]}})
    with pytest.raises(KeyError, match=r"lack \['q01', 'q99'\]"):
        norm.set_stats({"state": {"mean": [0, 0]}, "action": {"mean": [0, 0]}})
    with pytest.raises(ValueError, match="3 dims, the model expects 2"):
        norm.set_stats({"state": {"q01": [0, 0, 0], "q99": [1, 1, 1]}, "action": {"q01": [0, 0], "q99": [1, 1]}})


def _tiny_fast_tokenizer(path, **special):
    """A word-level tokenizer trained in-process and saved like a hub checkpoint (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["pick up the red cube", "open the drawer"],
                            trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", **special).save_pretrained(path)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_text_encoder_from_local_clip_and_siglip_folders(tmp_path, kind):
    if kind == "clip":
        from transformers import CLIPTextConfig as Config, CLIPTextModel as Model
    else:
        from transformers import SiglipTextConfig as Config, SiglipTextModel as Model
    cfg = Config(vocab_size=16, hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=16)
    Model(cfg).save_pretrained(tmp_path / kind)
    _tiny_fast_tokenizer(tmp_path / kind, bos_token="<s>", eos_token="</s>")
    enc = TextEncoder(TextEncoderConfig(kind=kind, path=str(tmp_path / kind), max_length=8))
    emb, mask = enc(["open the drawer", "pick up the red cube"])
    assert enc.out_dim == 24 and emb.shape == (2, 5, 24)
    assert mask.sum(1).tolist() == [3, 5]
