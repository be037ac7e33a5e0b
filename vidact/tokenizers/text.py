"""Frozen text encoders (T5 / CLIP / SigLIP from a local folder) with an embedding cache.

Instructions repeat across a robot dataset (one per task), so embeddings are cached per string:
a frozen encoder runs once per distinct instruction, not once per sample. With an on-disk cache
attached (``data.cache_dir``), it runs once per distinct instruction across runs and ranks too.

A policy bundle carries the encoder's weights in its own state dict, and its config and tokenizer
files in a folder of their own (:func:`save_text_encoder_files`): built with ``weights=False``
from that folder, the encoder needs nothing from the machine it was trained on.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from vidact.tokenizers.config import TextEncoderConfig


def tiny_t5_config():
    """A tiny random T5 encoder over ByT5's byte vocabulary (no vocab file needed): tests, demos."""
    from transformers import T5Config

    return T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                    feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)


class TextEncoder(nn.Module):
    """list[str] -> (embeddings [B,L,E], mask [B,L]); frozen, cached per string.

    ``weights=False``: a t5/clip/siglip encoder is built from ``cfg.path``'s config and tokenizer
    alone, its weights left at initialization for a state dict that holds them (a bundle)."""

    def __init__(self, cfg: TextEncoderConfig, weights: bool = True):
        super().__init__()
        self.kind, self.max_length, self.cache_size = cfg.kind, cfg.max_length, cfg.cache_size
        self.path = cfg.path
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self.disk_cache = None  # a vidact.data.cache.TextEmbeddingCache, from attach_cache()
        self.texts_encoded = 0  # strings that went through the encoder
        if cfg.kind == "tiny_t5":
            from transformers import ByT5Tokenizer, T5EncoderModel

            self.tokenizer = ByT5Tokenizer()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.encoder = T5EncoderModel(tiny_t5_config())
        elif cfg.kind in ("t5", "clip", "siglip"):
            self.tokenizer, self.encoder = _load_pretrained(cfg, weights)
        else:
            raise ValueError(f"model.text_encoder.kind={cfg.kind!r} cannot encode text")
        self.encoder.requires_grad_(False).eval()
        hidden = getattr(self.encoder.config, "d_model", None) or self.encoder.config.hidden_size
        self.out_dim: int = int(hidden)

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        self.encoder.eval()  # frozen
        return self

    def identity(self) -> str:
        """Names the encoder and its settings (the disk cache namespace)."""
        from vidact.data.cache import folder_fingerprint, module_fingerprint

        weights = f"path={folder_fingerprint(self.path)}" if self.path and self.kind != "tiny_t5" else \
            f"random={module_fingerprint(self.encoder)}"
        return f"text:{self.kind}|{weights}|max_length={self.max_length}"

    def attach_cache(self, root: str | Path) -> None:
        """Read instruction embeddings from (and write them to) ``root``; only a frozen encoder's."""
        from vidact.data.cache import TextEmbeddingCache

        trainable = [n for n, p in self.encoder.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(f"data.cache_dir: the text encoder has trainable parameters ({trainable[:3]}...); "
                             "cached embeddings would go stale as it trains. Freeze it or unset data.cache_dir")
        self.disk_cache = TextEmbeddingCache(Path(root) / "text", namespace=self.identity())
        self.texts_encoded = 0  # from here on, counts what the cache did not have

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str]) -> list[Tensor]:
        self.texts_encoded += len(texts)
        device = next(self.encoder.parameters()).device
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        out = self.encoder(input_ids=tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device))
        hidden = out.last_hidden_state.float()
        lengths = tok["attention_mask"].sum(1).tolist()
        return [hidden[i, : max(int(n), 1)].cpu() for i, n in enumerate(lengths)]

    @torch.no_grad()
    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            embs = (self._encode_uncached(missing) if self.disk_cache is None
                    else self.disk_cache.embeddings(missing, self._encode_uncached))
            for text, emb in zip(missing, embs):
                self._cache[text] = emb
        for t in texts:
            self._cache.move_to_end(t)
        per_sample = [self._cache[t] for t in texts]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return pad_embeddings(per_sample, device=next(self.encoder.parameters()).device)


def pad_embeddings(per_sample: list[Tensor], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """[Li, E] each -> (embeddings [B, max L, E], mask [B, max L] True on real tokens)."""
    L = max(e.shape[0] for e in per_sample)
    E = per_sample[0].shape[1]
    emb = torch.zeros(len(per_sample), L, E)
    mask = torch.zeros(len(per_sample), L, dtype=torch.bool)
    for i, e in enumerate(per_sample):
        emb[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = True
    return emb.to(device), mask.to(device)


def _model_class(kind: str):
    if kind == "t5":
        from transformers import T5EncoderModel as Model
    elif kind == "clip":
        from transformers import CLIPTextModel as Model
    else:
        from transformers import SiglipTextModel as Model
    return Model


def _local_folder(cfg: TextEncoderConfig) -> Path:
    path = Path(cfg.path or "").expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model.text_encoder.path={cfg.path!r} is not a local folder "
                                "(vidact never downloads weights; point it at a saved transformers checkpoint)")
    return path


def _load_pretrained(cfg: TextEncoderConfig, weights: bool = True):
    from transformers import AutoTokenizer

    path, Model = _local_folder(cfg), _model_class(cfg.kind)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if weights:
        return tokenizer, Model.from_pretrained(str(path), local_files_only=True)
    # The architecture alone, in the dtype from_pretrained would give it (the config's).
    config = Model.config_class.from_pretrained(str(path), local_files_only=True)
    return tokenizer, Model._from_config(config)


def save_text_encoder_files(cfg: TextEncoderConfig, out: str | Path) -> None:
    """Write a t5/clip/siglip encoder's config and tokenizer files (no weights) to ``out``: what
    ``TextEncoder(cfg with path=out, weights=False)`` reads."""
    from transformers import AutoTokenizer

    path, Model = _local_folder(cfg), _model_class(cfg.kind)
    # Through the classes rather than copying files: a CLIP/SigLIP checkpoint's config holds the
    # vision tower too; the text model's own config class keeps the text part.
    Model.config_class.from_pretrained(str(path), local_files_only=True).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(path), local_files_only=True).save_pretrained(str(out))
