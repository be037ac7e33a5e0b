"""Frames <-> latent patch tokens, and optional timm observation encoders.

A frame tokenizer maps frames ``[..., C, H, W]`` in [0, 1] to tokens ``[..., N, Dl]`` and back.
``patch`` has no weights (pixels in [-1, 1], cut into patches); ``vae`` runs a frozen autoencoder
loaded from a local folder and patchifies its latents (the SD/Cosmos recipe): a diffusers
``AutoencoderKL``, or vidact's own small one trained on the robot's frames (``vidact autoencoder``).
The decoder is what turns predicted future tokens back into video.

``weights=False`` builds the VAE (and a timm encoder) from its config alone, for a state dict that
holds the weights: a policy bundle carries the VAE's ``config.json`` (:func:`save_vae_config`)
and nothing else from the training machine.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vidact.tokenizers.autoencoder import FrameAutoencoder, is_autoencoder_folder, read_config, write_config
from vidact.tokenizers.config import FrameTokenizerConfig, ObsEncoderConfig


def patchify(x: Tensor, p: int) -> Tensor:
    """[..., C, H, W] -> [..., (H/p)*(W/p), C*p*p], patches in row-major order."""
    *lead, C, H, W = x.shape
    n = len(lead)
    x = x.reshape(*lead, C, H // p, p, W // p, p)
    x = x.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)  # [..., H/p, W/p, C, p, p]
    return x.reshape(*lead, (H // p) * (W // p), C * p * p)


def unpatchify(tokens: Tensor, p: int, C: int, H: int, W: int) -> Tensor:
    """Exact inverse of :func:`patchify`: [..., N, C*p*p] -> [..., C, H, W]"""
    *lead, _, _ = tokens.shape
    n = len(lead)
    x = tokens.reshape(*lead, H // p, W // p, C, p, p)
    x = x.permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)  # [..., C, H/p, p, W/p, p]
    return x.reshape(*lead, C, H, W)


class PatchTokenizer(nn.Module):
    """Pixels as tokens: no weights, exact round trip."""

    def __init__(self, channels: int, height: int, width: int, patch_size: int):
        super().__init__()
        if height % patch_size or width % patch_size:
            raise ValueError(f"model.frame_tokenizer.patch_size={patch_size} must divide the frame size "
                             f"{height}x{width}")
        self.channels, self.height, self.width, self.patch_size = channels, height, width, patch_size
        self.grid = (height // patch_size, width // patch_size)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def token_dim(self) -> int:
        return self.channels * self.patch_size**2

    def encode(self, frames: Tensor) -> Tensor:
        """[..., C, H, W] in [0,1] -> [..., N, Dl] in [-1,1]"""
        return patchify(frames * 2 - 1, self.patch_size)

    def decode(self, tokens: Tensor) -> Tensor:
        """[..., N, Dl] -> [..., C, H, W] in [0,1]"""
        frames = unpatchify(tokens, self.patch_size, self.channels, self.height, self.width)
        return ((frames + 1) / 2).clamp(0, 1)


def tiny_vae_config(channels: int = 3) -> dict:
    """A ~40k-parameter AutoencoderKL (2x downsampling, 4 latent channels) for tests and demos."""
    return dict(in_channels=channels, out_channels=channels, latent_channels=4,
                down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, sample_size=64)


class VAETokenizer(nn.Module):
    """A frozen diffusers ``AutoencoderKL`` from a local folder; latents patchified into tokens."""

    def __init__(self, cfg: FrameTokenizerConfig, channels: int, height: int, width: int, weights: bool = True):
        super().__init__()
        from diffusers import AutoencoderKL

        self.vae_path = cfg.vae_path
        self.latent_cache = None  # a vidact.data.cache.LatentCache, from attach_cache()
        self.frames_encoded = 0  # frames that went through the VAE encoder
        if cfg.vae_path and is_autoencoder_folder(_vae_folder(cfg)):  # vidact's own (`vidact autoencoder`)
            self.vae = FrameAutoencoder.from_pretrained(_vae_folder(cfg), weights=weights)
        elif cfg.vae_path:
            path = _vae_folder(cfg)
            self.vae = (AutoencoderKL.from_pretrained(str(path), local_files_only=True) if weights
                        else AutoencoderKL.from_config(AutoencoderKL.load_config(str(path), local_files_only=True)))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.vae_tiny_seed)
                self.vae = AutoencoderKL(**tiny_vae_config(channels))
        self.vae.requires_grad_(False).eval()
        self.diffusers = isinstance(self.vae, AutoencoderKL)
        if self.diffusers:
            down = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.latent_channels = self.vae.config.latent_channels
            self.scaling_factor = float(self.vae.config.scaling_factor or 1.0)
        else:  # latents already normalized per channel
            down, self.latent_channels, self.scaling_factor = self.vae.downsample, self.vae.latent_channels, 1.0
        self.latent_hw = (height // down, width // down)
        self.patch_size = cfg.patch_size
        self.channels, self.height, self.width = channels, height, width
        if self.latent_hw[0] % cfg.patch_size or self.latent_hw[1] % cfg.patch_size or height % down:
            raise ValueError(f"frame size {height}x{width} with VAE downsampling {down} gives latents "
                             f"{self.latent_hw}, not divisible by model.frame_tokenizer.patch_size={cfg.patch_size}")
        self.grid = (self.latent_hw[0] // cfg.patch_size, self.latent_hw[1] // cfg.patch_size)

    def train(self, mode: bool = True) -> "VAETokenizer":
        super().train(mode)
        self.vae.eval()  # frozen, always in eval mode
        return self

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    # -------------------------------------------------------------- the on-disk latent cache

    def identity(self) -> str:
        """Names the encoder and everything that shapes its output tokens (the cache namespace)."""
        from vidact.data.cache import folder_fingerprint, module_fingerprint

        weights = (f"path={folder_fingerprint(self.vae_path)}" if self.vae_path
                   else f"random={module_fingerprint(self.vae)}")
        return (f"vae:{weights}|{self.channels}x{self.height}x{self.width}|patch={self.patch_size}"
                f"|scale={self.scaling_factor}|dtype={self.vae.dtype}")

    def attach_cache(self, root: str | Path) -> None:
        """Read frame latents from (and write them to) ``root`` for frames named by keys
        (:meth:`encode_cached`). Only a frozen VAE's latents can be cached."""
        from vidact.data.cache import LatentCache

        trainable = [n for n, p in self.vae.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(f"data.cache_dir: the VAE has trainable parameters ({trainable[:3]}...); cached "
                             "latents would go stale as it trains. Freeze it or unset data.cache_dir")
        self.latent_cache = LatentCache(Path(root) / "latents", namespace=self.identity())
        self.frames_encoded = 0  # from here on, counts what the cache did not have (and unkeyed frames)

    # -------------------------------------------------------------- frames <-> tokens

    @torch.no_grad()
    def _encode_flat(self, x: Tensor) -> Tensor:
        """[N,C,H,W] in [0,1] -> [N, n, Dl]"""
        self.frames_encoded += x.shape[0]
        x = (x * 2 - 1).to(self.vae.dtype)
        latents = (self.vae.encode(x).latent_dist.mean * self.scaling_factor if self.diffusers
                   else self.vae.encode(x))
        return patchify(latents.float(), self.patch_size)

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        lead = frames.shape[:-3]
        tokens = self._encode_flat(frames.reshape(-1, *frames.shape[-3:]))
        return tokens.reshape(*lead, *tokens.shape[-2:])

    @torch.no_grad()
    def encode_cached(self, frames: Tensor, keys: list[list[list[str]]]) -> Tensor:
        """``encode`` for frames [B,T,V,C,H,W] named by ``keys`` [B][T][V] (``Batch.frame_keys``):
        each distinct frame read from the latent cache, or encoded once and stored."""
        B, T, V = frames.shape[:3]
        flat_keys = [str(v) for sample in keys for t in sample for v in t]
        if len(flat_keys) != B * T * V or any(len(t) != V for sample in keys for t in sample):
            raise ValueError(f"batch.frame_keys does not match the frames' [B,T,V] = {[B, T, V]}")
        flat = frames.reshape(-1, *frames.shape[-3:])
        first: dict[str, int] = {}
        for i, k in enumerate(flat_keys):
            first.setdefault(k, i)
        unique = list(first)
        values = self.latent_cache.latents(
            [(k,) for k in unique], lambda missing: flat[[first[unique[m]] for m in missing]],
            self._encode_flat, device=frames.device)
        position = {k: j for j, k in enumerate(unique)}
        tokens = values[torch.tensor([position[k] for k in flat_keys], device=frames.device)]
        return tokens.reshape(B, T, V, *tokens.shape[-2:])

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        lead = tokens.shape[:-2]
        latents = unpatchify(tokens.reshape(-1, *tokens.shape[-2:]), self.patch_size, self.latent_channels,
                             *self.latent_hw)
        latents = (latents / self.scaling_factor).to(self.vae.dtype)
        frames = (self.vae.decode(latents).sample if self.diffusers else self.vae.decode(latents)).float()
        frames = ((frames + 1) / 2).clamp(0, 1)
        return frames.reshape(*lead, *frames.shape[-3:])


def _vae_folder(cfg: FrameTokenizerConfig) -> Path:
    path = Path(cfg.vae_path or "").expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model.frame_tokenizer.vae_path={cfg.vae_path!r} does not exist "
                                "(expected a local diffusers AutoencoderKL folder)")
    return path


def save_vae_config(cfg: FrameTokenizerConfig, out: str | Path) -> None:
    """Write the VAE's ``config.json`` (no weights) to ``out``: what ``VAETokenizer(cfg with
    vae_path=out, weights=False)`` reads."""
    import json

    from diffusers import AutoencoderKL

    folder = _vae_folder(cfg)
    if is_autoencoder_folder(folder):
        write_config(read_config(folder), out)
        return
    config = AutoencoderKL.load_config(str(folder), local_files_only=True)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "config.json").write_text(json.dumps(dict(config), indent=2, sort_keys=True))


def build_frame_tokenizer(cfg: FrameTokenizerConfig, channels: int, height: int, width: int,
                          weights: bool = True) -> nn.Module:
    if cfg.kind == "patch":
        return PatchTokenizer(channels, height, width, cfg.patch_size)
    if cfg.kind == "vae":
        return VAETokenizer(cfg, channels, height, width, weights)
    raise ValueError(f"model.frame_tokenizer.kind={cfg.kind!r} is not one of ['patch', 'vae']")


class TimmObsEncoder(nn.Module):
    """Any timm backbone as an observation encoder: frames -> its last feature map as tokens.

    Weights come from a local file (``weights_path``) through timm's ``pretrained_cfg_overlay``
    (``weights=False``: not read; a state dict brings them); nothing is downloaded. The ImageNet
    normalization of the backbone's pretrained config is applied.
    """

    def __init__(self, cfg: ObsEncoderConfig, channels: int, height: int, width: int, weights: bool = True):
        super().__init__()
        import timm

        kwargs: dict = dict(num_classes=0, in_chans=channels)
        if cfg.weights_path and weights:
            path = Path(cfg.weights_path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"model.obs_encoder.weights_path={cfg.weights_path!r} is not a file")
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        try:
            self.backbone = timm.create_model(cfg.timm_name, **kwargs)
        except RuntimeError as e:  # unknown model names raise RuntimeError in timm
            raise ValueError(f"model.obs_encoder.timm_name={cfg.timm_name!r}: {e}") from e
        data_cfg = timm.data.resolve_data_config({}, model=self.backbone)
        self.register_buffer("mean", torch.tensor(data_cfg["mean"][:channels]).view(channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"][:channels]).view(channels, 1, 1), persistent=False)
        self.freeze = cfg.freeze
        if cfg.freeze:
            self.backbone.requires_grad_(False).eval()
        with torch.no_grad():
            probe = self._features(torch.zeros(1, channels, height, width))
        self.tokens_per_frame, self.token_dim = probe.shape[1], probe.shape[2]

    def train(self, mode: bool = True) -> "TimmObsEncoder":
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def _features(self, x: Tensor) -> Tensor:
        feats = self.backbone.forward_features((x - self.mean) / self.std)
        if feats.ndim == 4:  # CNN: [B, C, h, w] -> [B, h*w, C]
            return feats.flatten(2).transpose(1, 2)
        return feats  # ViT-like: [B, N, C]

    def encode(self, frames: Tensor) -> Tensor:
        """[..., C, H, W] in [0,1] -> [..., N, Dobs]"""
        lead = frames.shape[:-3]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            tokens = self._features(frames.reshape(-1, *frames.shape[-3:]))
        return tokens.reshape(*lead, *tokens.shape[-2:])


class KeypointObsEncoder(nn.Module):
    """A small trainable CNN read out by a spatial softmax (the encoder of robomimic and Diffusion
    Policy): each of ``keypoints`` tokens is where one learned feature peaks in the frame, as
    expected (x, y) in [-1, 1], followed by the feature map's mean under that peak. Where a small
    object is becomes an output of the encoder instead of something a linear patch embedding and
    the transformer must learn to compute; the convolutions find it wherever it is.

    96x96 -> two stride-2 convolutions -> a 24x24 map (4 pixels a cell; the soft argmax is finer).
    """

    def __init__(self, cfg: ObsEncoderConfig, channels: int, height: int, width: int):
        super().__init__()
        if cfg.keypoints < 1 or cfg.conv_width < 8 or cfg.conv_width % 8:
            raise ValueError(f"model.obs_encoder: keypoints={cfg.keypoints} must be >= 1 and "
                             f"conv_width={cfg.conv_width} a multiple of 8")
        w = cfg.conv_width

        def block(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.GroupNorm(8, cout), nn.GELU()]

        self.net = nn.Sequential(*block(channels, w // 2, 5, 2), *block(w // 2, w, 3, 2),
                                 *block(w, w, 3, 1), *block(w, w, 3, 1))
        self.logits = nn.Conv2d(w, cfg.keypoints, 1)
        with torch.no_grad():
            h, w_ = self.net(torch.zeros(1, channels, height, width)).shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w_), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], -1), persistent=False)  # [hw,2]
        self.tokens_per_frame, self.token_dim = cfg.keypoints, 2 + w

    def encode(self, frames: Tensor) -> Tensor:
        """[..., C, H, W] in [0,1] -> [..., K, 2 + conv_width]"""
        lead = frames.shape[:-3]
        feats = self.net(frames.reshape(-1, *frames.shape[-3:]) * 2 - 1)  # [B,w,h,w]
        attn = self.logits(feats).flatten(2).softmax(-1)  # [B,K,hw]
        where = attn @ self.grid.to(attn.dtype)  # [B,K,2]
        what = attn @ feats.flatten(2).transpose(1, 2)  # [B,K,w]
        tokens = torch.cat([where, what], -1)
        return tokens.reshape(*lead, *tokens.shape[-2:])


class ViTObsEncoder(nn.Module):
    """Pixel patches + ``layers`` pre-norm transformer layers over one frame's patches: the frame's
    own perception trunk. Its tokens read nothing but the frame, so a target asked of them (the
    scene-state head with ``model.env_state_source=encoder``) can only be met by looking, not from
    the robot's state as in the backbone (BENCHMARKS.md "The goal was not in the first frame")."""

    def __init__(self, cfg: ObsEncoderConfig, channels: int, height: int, width: int):
        super().__init__()
        if cfg.layers < 1 or cfg.width < 4 or cfg.width % 4:
            raise ValueError(f"model.obs_encoder: layers={cfg.layers} must be >= 1 and width={cfg.width} a "
                             f"multiple of 4")
        self.patches = PatchTokenizer(channels, height, width, cfg.patch_size)
        self.embed = nn.Linear(self.patches.token_dim, cfg.width)
        self.pos = nn.Parameter(torch.randn(self.patches.tokens_per_frame, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.width, 4, 4 * cfg.width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.tokens_per_frame, self.token_dim = self.patches.tokens_per_frame, cfg.width

    def encode(self, frames: Tensor) -> Tensor:
        """[..., C, H, W] in [0,1] -> [..., N, width]"""
        lead = frames.shape[:-3]
        x = self.embed(self.patches.encode(frames.reshape(-1, *frames.shape[-3:]))) + self.pos
        tokens = self.norm(self.layers(x))
        return tokens.reshape(*lead, *tokens.shape[-2:])
