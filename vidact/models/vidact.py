"""VidAct: the unified video-action transformer (network only; the generative process is in
``vidact.generative``).

The network maps a token sequence ``[language | state | observed frames | future frames (noisy) |
action chunk (noisy)]`` plus one noise level per generated modality to velocities for the
future-frame tokens and the action tokens. Contract (openpi-style, two entry points):

- ``embed_prefix(batch)`` turns the conditioning into tokens once;
- ``forward(prefix, future_x, action_x, tau_video, tau_action)`` predicts velocities, with the
  whole sequence (training), or with a cached prefix (``cache_prefix`` + ``forward_cached``,
  sampling: the prefix is encoded once per chunk, not once per denoising step).

A generated group passed as ``None`` to ``forward_cached`` is physically absent, so
``policy_fast`` pays nothing for the video tokens it skips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vidact.models.configuration import VidActConfig
from vidact.models.layout import GROUP_ORDER, Group, TokenLayout, attention_mask, device_cache, flex_block_mask
from vidact.models.transformer import KVCache, TimestepEmbedder, Transformer
from vidact.tokenizers.action import Normalizer
from vidact.tokenizers.text import TextEncoder, pad_embeddings
from vidact.tokenizers.video import (KeypointObsEncoder, PatchTokenizer, TimmObsEncoder, ViTObsEncoder,
                                     build_frame_tokenizer)
from vidact.types import Batch, BatchSpec

# Conditioning slots for AdaLN: every prefix token is clean (tau = 0); future-frame and action
# tokens carry their own modality's tau.
SLOT_CLEAN, SLOT_VIDEO, SLOT_ACTION = 0, 1, 2
_GROUP_SLOT = {Group.LANGUAGE: SLOT_CLEAN, Group.STATE: SLOT_CLEAN, Group.OBS: SLOT_CLEAN,
               Group.FUTURE: SLOT_VIDEO, Group.ACTION: SLOT_ACTION}
X0_MIN_TAU = 0.05  # model.video_prediction="x0": the floor on tau when dividing by it


@dataclass
class Prefix:
    tokens: Tensor  # [B,Np,D]
    key_valid: Tensor  # [B,Np] bool
    layout: TokenLayout  # the prefix groups only
    future_base: Tensor | None = None  # [B,Nf,Dl] last observed frame's tokens (model.video_residual)
    encoded: Tensor | None = None  # [B,V*n,Dobs] the newest frame's encoder tokens (model.env_state_source=encoder)


@dataclass
class Prediction:
    video: Tensor | None  # [B,Nf,Dl] velocity of the future-frame latent tokens
    action: Tensor | None  # [B,K,A] velocity of the normalized actions
    env_state: Tensor | None = None  # [B,E] normalized scene state (model.env_state_dim; training only)


class EnvStateHead(nn.Module):
    """The auxiliary scene-state head (``model.env_state_dim``): the newest observed frame's tokens
    (after the backbone, or the observation encoder's), averaged view by view, the views' averages
    side by side -> E values (so that two cameras can triangulate: one view's average alone says
    where a thing is in that picture). Targets are normalized by running statistics kept in
    buffers (the first batch's, then an exponential average), so the head needs no dataset
    statistics and its scale is saved with the weights."""

    def __init__(self, dim: int, out_dim: int, views: int = 1, momentum: float = 0.01):
        super().__init__()
        self.views = views
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(views * dim, out_dim)
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(out_dim))
        self.register_buffer("std", torch.ones(out_dim))
        self.register_buffer("seen", torch.tensor(False))

    def forward(self, tokens: Tensor) -> Tensor:
        """[B,V*n,D] (view-major) -> [B,E] (normalized units)."""
        per_view = tokens.unflatten(1, (self.views, -1)).mean(2)  # [B,V,D]
        return self.proj(self.norm(per_view).flatten(1))

    def normalize(self, target: Tensor) -> Tensor:
        """[b,E] raw -> normalized; in training mode the statistics first move toward the batch's."""
        target = target.float()
        if self.training:
            with torch.no_grad():
                mean, std = target.mean(0), target.std(0, unbiased=False) if len(target) > 1 else self.std
                if not bool(self.seen):
                    self.mean.copy_(mean), self.std.copy_(std.clamp(min=1e-3)), self.seen.fill_(True)
                else:
                    self.mean.lerp_(mean, self.momentum)
                    self.std.lerp_(std.clamp(min=1e-3), self.momentum)
        return (target - self.mean) / self.std


class VidAct(nn.Module):
    """``component_weights=False``: the pretrained components (text encoder, VAE, timm backbone)
    are built from their configs alone, their weights left for a state dict that holds them
    (a policy bundle: nothing is read from the training machine's weight folders)."""

    def __init__(self, config: VidActConfig, component_weights: bool = True):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        D, depth, heads = c.size
        self.dim = D

        self.frame_tokenizer = build_frame_tokenizer(c.frame_tokenizer, c.channels, c.height, c.width,
                                                     weights=component_weights)
        self.obs_encoder = build_obs_encoder(c, weights=component_weights)
        self.text_encoder = (TextEncoder(c.text_encoder, weights=component_weights)
                             if c.text_encoder.kind != "none" else None)
        self.normalizer = Normalizer(c.state_dim, c.action_dim, c.normalization)

        n_frame, d_latent = self.frame_tokenizer.tokens_per_frame, self.frame_tokenizer.token_dim
        obs_src = self.obs_encoder or self.frame_tokenizer
        self.tokens_per_frame, self.latent_dim = n_frame, d_latent
        self.obs_tokens_per_frame = obs_src.tokens_per_frame

        # Input projections and embeddings (modality, time, view, space).
        self.text_proj = nn.Linear(self.text_encoder.out_dim, D) if self.text_encoder else None
        self.state_proj = nn.Linear(c.state_dim, D)
        self.obs_proj = nn.Linear(obs_src.token_dim, D)
        self.future_in = nn.Linear(d_latent, D)
        self.action_in = nn.Linear(c.action_dim, D)
        self.modality_emb = nn.Parameter(torch.zeros(len(GROUP_ORDER), D))
        # Separate learned positions for observed and future frames. Sharing one table (learned or
        # fixed 2D sin-cos) was measured worse on the sliding-square task: 0.3-0.8 action MSE after
        # 500 steps against 0.02-0.1 with separate tables (mean-action baseline 1.43).
        self.obs_pos = nn.Parameter(torch.zeros(self.obs_tokens_per_frame, D))
        self.future_pos = nn.Parameter(torch.zeros(n_frame, D))
        self.view_emb = nn.Parameter(torch.zeros(c.views, D))
        # A frame-local prefix carries the slot in the attention (Attention.slot_kv), not in the tokens.
        self.frame_local = c.prefix_attention == "frame_local"
        self.history_emb = None if self.frame_local else nn.Parameter(torch.zeros(c.history, D))
        self.future_time_emb = nn.Parameter(torch.zeros(max(c.future_frames, 1), D))
        self.action_pos = nn.Parameter(torch.zeros(c.chunk_length, D))
        self.time_embed = TimestepEmbedder(D)

        self.backbone = Transformer(D, depth, heads, c.mlp_ratio, c.qk_norm, c.history if self.frame_local else 0)
        self.future_out = nn.Linear(D, d_latent)
        self.action_out = nn.Linear(D, c.action_dim)
        head_dim = obs_src.token_dim if c.env_state_source == "encoder" else D
        self.env_state_head = EnvStateHead(head_dim, c.env_state_dim, c.views) if c.env_state_dim else None
        # model.env_state_input: the head's reading of each observed frame -> that step's state token
        self.env_state_in = nn.Linear(c.env_state_dim, D) if c.env_state_input else None
        self._init_weights()

    # ------------------------------------------------------------------ set-up

    def _init_weights(self) -> None:
        for p in (self.modality_emb, self.obs_pos, self.future_pos, self.view_emb, self.history_emb,
                  self.future_time_emb, self.action_pos):
            if p is not None:
                nn.init.normal_(p, std=self.config.embedding_init_std)
        for head in (self.future_out, self.action_out, self.env_state_in):  # DiT: zero output layers
            if head is None:  # (the scene-state input starts as the plain policy)
                continue
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @property
    def spec(self) -> BatchSpec:
        c = self.config
        return BatchSpec(history=c.history, future=c.future_frames, views=c.views, channels=c.channels,
                         height=c.height, width=c.width, state_dim=c.state_dim, action_dim=c.action_dim,
                         chunk_length=c.chunk_length)

    @property
    def future_tokens(self) -> int:
        """Nf = Tf * V * tokens per frame."""
        return self.config.future_frames * self.config.views * self.tokens_per_frame

    def frozen_modules(self) -> dict[str, nn.Module]:
        out = {"frame_tokenizer": self.frame_tokenizer}
        if self.text_encoder is not None:
            out["text_encoder"] = self.text_encoder
        enc = self.config.obs_encoder
        if self.obs_encoder is not None and enc.kind in ("timm", "patch") and enc.freeze:
            out["obs_encoder"] = self.obs_encoder
        return out

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ frames <-> latent tokens

    def encode_frames(self, frames: Tensor, latents: Tensor | None = None) -> Tensor:
        """[B,T,V,C,H,W] -> [B, T*V*n, Dl] (no gradient: the tokenizer is frozen); ``latents``
        [B,T,V,n,Dl], the frames' tokens when already known (``Batch.*_frame_latents``), are used as they are."""
        if latents is None:
            with torch.no_grad():
                latents = self.frame_tokenizer.encode(frames)  # [B,T,V,n,Dl]
        return latents.flatten(1, 3)

    def decode_frames(self, tokens: Tensor) -> Tensor:
        """[B, Tf*V*n, Dl] -> [B,Tf,V,C,H,W]"""
        c = self.config
        B = tokens.shape[0]
        tokens = tokens.reshape(B, -1, c.views, self.tokens_per_frame, self.latent_dim)
        return self.frame_tokenizer.decode(tokens)

    # ------------------------------------------------------------------ tokens

    def embed_text(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """-> (text embeddings [B,L,E], mask [B,L]) from the cache fields or the frozen encoder."""
        if batch.text_embeddings is not None:
            mask = batch.text_mask if batch.text_mask is not None else torch.ones(
                batch.text_embeddings.shape[:2], dtype=torch.bool, device=batch.text_embeddings.device)
            return batch.text_embeddings, mask
        assert self.text_encoder is not None
        return self.text_encoder(list(batch.text))

    def embed_prefix(self, batch: Batch, drop_language: Tensor | None = None) -> Prefix:
        """Language, state and observed-frame tokens. ``drop_language`` [B] bool masks the
        instruction out (classifier-free guidance's unconditional branch)."""
        self.spec.check(batch)
        B, Th = batch.obs_frames.shape[:2]
        device = batch.obs_frames.device
        obs_valid = self.history_valid(batch)
        parts, valid, lengths = [], [], {}
        language = self.language_tokens(batch, drop_language)
        if language is not None:
            parts.append(language[0])
            valid.append(language[1])
            lengths[Group.LANGUAGE.value] = language[0].shape[1]

        encoded = self.encode_obs(batch.obs_frames, batch.obs_frame_latents)  # [B,Th,V,n,Dobs]
        state = self.state_tokens(batch.state, encoded)  # [B,Th,D]
        if self.history_emb is not None:
            state = state + self.history_emb
        parts.append(state)
        valid.append(obs_valid if batch.state_is_pad is None else obs_valid & ~batch.state_is_pad.to(device))
        lengths[Group.STATE.value] = Th

        obs = self.obs_tokens(batch.obs_frames, encoded=encoded)  # [B,Th,V,n,D]
        if self.history_emb is not None:
            obs = obs + self.history_emb[:, None, None]
        n_obs = obs.shape[2] * obs.shape[3]
        parts.append(obs.flatten(1, 3))  # [B, Th*V*n, D]
        valid.append(obs_valid[:, :, None].expand(B, Th, n_obs).flatten(1))
        lengths[Group.OBS.value] = Th * n_obs
        layout = TokenLayout.build(frames=Th if self.frame_local else 0, **lengths)
        newest = encoded[:, -1].flatten(1, 2) if self.config.env_state_source == "encoder" else None
        return Prefix(torch.cat(parts, 1), torch.cat(valid, 1), layout, self.future_base(batch), newest)

    def history_valid(self, batch: Batch) -> Tensor:
        """[B,Th] which history steps the prefix reads (``model.history_before_start``)."""
        B, Th = batch.obs_frames.shape[:2]
        if batch.obs_is_pad is None:
            return torch.ones(B, Th, dtype=torch.bool, device=batch.obs_frames.device)
        valid = ~batch.obs_is_pad
        if self.config.history_before_start == "rest":
            # The leading padded steps are those before the episode's first frame, which they repeat.
            valid = valid | batch.obs_is_pad.long().cumprod(1).bool()
        return valid

    def language_tokens(self, batch: Batch, drop_language: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
        """(tokens [B,L,D], mask [B,L]) of the instruction, or None for a model without language."""
        if self.text_encoder is None and batch.text_embeddings is None:
            return None
        device = batch.obs_frames.device
        emb, mask = self.embed_text(batch)
        if self.text_proj is None:
            raise ValueError("batch carries text embeddings but model.text_encoder.kind='none'")
        emb, mask = emb.to(device), mask.to(device)
        if drop_language is not None:
            mask = mask & ~drop_language[:, None]
        return self.text_proj(emb.to(self.text_proj.weight.dtype)) + self.modality_emb[0], mask

    def state_tokens(self, state: Tensor, encoded: Tensor | None = None) -> Tensor:
        """[B,T,S] raw state -> [B,T,D] (without the history slot's embedding); ``encoded``
        [B,T,V,n,Dobs]: the same steps' :meth:`encode_obs` tokens, read by the scene-state head
        into each step's token with ``model.env_state_input``."""
        state = self.normalizer.normalize("state", state)
        tokens = self.state_proj(state.to(self.state_proj.weight.dtype)) + self.modality_emb[1]
        if self.env_state_in is not None:
            if encoded is None:
                raise ValueError("model.env_state_input: the state tokens need the frames' encoder tokens")
            B, T = encoded.shape[:2]
            with torch.no_grad():  # an estimate handed to the policy; the head learns from its own target
                scene = self.env_state_head(encoded.flatten(2, 3).flatten(0, 1).to(tokens.dtype))  # [B*T,E]
            tokens = tokens + self.env_state_in(scene.view(B, T, -1))
        return tokens

    def encode_obs(self, frames: Tensor, latents: Tensor | None = None) -> Tensor:
        """[B,T,V,C,H,W] observed frames -> [B,T,V,n,Dobs], the observation encoder's tokens;
        ``latents`` [B,T,V,n,Dl]: their frame-tokenizer tokens when already known (latent cache)."""
        if self.obs_encoder is None and latents is not None:
            return latents
        return (self.obs_encoder or self.frame_tokenizer).encode(frames)

    def obs_tokens(self, frames: Tensor, latents: Tensor | None = None, encoded: Tensor | None = None) -> Tensor:
        """[B,T,V,C,H,W] observed frames -> [B,T,V,n,D] (without the history slot's embedding);
        ``encoded``: their :meth:`encode_obs` tokens when already computed."""
        obs = self.encode_obs(frames, latents) if encoded is None else encoded
        obs = self.obs_proj(obs.to(self.obs_proj.weight.dtype))
        return obs + self.obs_pos + self.view_emb[:, None] + self.modality_emb[2]

    def future_base(self, batch: Batch) -> Tensor | None:
        """``model.video_residual``: the last observed frame's tokens, once per future frame [B,Nf,Dl]."""
        c = self.config
        if not (c.video_residual and self.future_tokens):
            return None
        known = None if batch.obs_frame_latents is None else batch.obs_frame_latents[:, -1:]
        return self.encode_frames(batch.obs_frames[:, -1:], known).repeat(1, c.future_frames, 1)

    def embed_future(self, future_x: Tensor) -> Tensor:
        """[B, Tf*V*n, Dl] noisy latent tokens -> [B, Nf, D]"""
        c = self.config
        B = future_x.shape[0]
        x = self.future_in(future_x).view(B, c.future_frames, c.views, self.tokens_per_frame, self.dim)
        x = x + self.future_pos + self.view_emb[:, None] + self.future_time_emb[:, None, None] + self.modality_emb[3]
        return x.flatten(1, 3)

    def embed_actions(self, action_x: Tensor) -> Tensor:
        """[B,K,A] noisy normalized actions -> [B,K,D]"""
        return self.action_in(action_x) + self.action_pos + self.modality_emb[4]

    def _conditioning(self, tau_video: Tensor, tau_action: Tensor) -> Tensor:
        taus = torch.stack([torch.zeros_like(tau_video), tau_video, tau_action], dim=1)  # [B,3]
        return self.time_embed(taus)  # [B,3,D]

    def _generated(self, future_x: Tensor | None, action_x: Tensor | None) -> tuple[list[Tensor], dict[str, int]]:
        parts, lengths = [], {}
        if future_x is not None:
            parts.append(self.embed_future(future_x))
            lengths[Group.FUTURE.value] = parts[-1].shape[1]
        if action_x is not None:
            parts.append(self.embed_actions(action_x))
            lengths[Group.ACTION.value] = parts[-1].shape[1]
        return parts, lengths

    def _heads(self, out: Tensor, layout: TokenLayout, offset: int = 0) -> Prediction:
        sl = layout.slices()
        video = action = None
        if Group.FUTURE in sl:
            s = sl[Group.FUTURE]
            video = self.future_out(out[:, s.start - offset: s.stop - offset])
        if Group.ACTION in sl:
            s = sl[Group.ACTION]
            action = self.action_out(out[:, s.start - offset: s.stop - offset])
        return Prediction(video, action)

    def _as_velocity(self, pred: Prediction, future_x: Tensor | None, tau_video: Tensor,
                     base: Tensor | None = None) -> Prediction:
        """The future-frame head's output as a velocity. ``model.video_prediction="x0"``: the output
        is a clean-frame estimate, v = (x_tau - x0_hat) / tau with tau floored at X0_MIN_TAU (JiT's
        clip) so near-clean inputs do not divide by ~0. ``model.video_residual``: ``base`` (the last
        observed frame's tokens) is added to x0_hat, or subtracted from a velocity (v = eps - x0).
        Frames given clean (tau = 0) are never scored or integrated."""
        if pred.video is None or (self.config.video_prediction == "velocity" and base is None):
            return pred
        out = pred.video
        if self.config.video_prediction == "velocity":
            return Prediction(out - base.to(out.dtype), pred.action)
        x0 = out if base is None else out + base.to(out.dtype)
        tau = tau_video.clamp(min=X0_MIN_TAU).to(out.dtype).view(-1, 1, 1)
        return Prediction((future_x.to(out.dtype) - x0) / tau, pred.action)

    @staticmethod
    def _cond_index(layout: TokenLayout, device: torch.device, skip: int = 0) -> Tensor:
        return _cond_index(layout, torch.device(device), skip)

    # ------------------------------------------------------------------ network

    def forward(self, prefix: Prefix, future_x: Tensor | None, action_x: Tensor | None, tau_video: Tensor,
                tau_action: Tensor, future_valid: Tensor | None = None, action_valid: Tensor | None = None
                ) -> Prediction:
        """The whole sequence at once (training). ``future_valid`` / ``action_valid`` [B] bool: False
        masks that sample's group out as keys, exactly as if it were dropped from the sequence."""
        parts, lengths = self._generated(future_x, action_x)
        layout = prefix.layout.extend(**lengths)
        B, device = prefix.tokens.shape[0], prefix.tokens.device
        valid = [prefix.key_valid]
        for name, flag in ((Group.FUTURE.value, future_valid), (Group.ACTION.value, action_valid)):
            if name in lengths:
                flag = torch.ones(B, dtype=torch.bool, device=device) if flag is None else flag
                valid.append(flag[:, None].expand(B, lengths[name]))
        key_valid = torch.cat(valid, 1)
        if self.backbone.attention_backend == "flex":
            mask = flex_block_mask(layout, key_valid)
        elif device.type == "cpu" and bool(key_valid.all()):  # no per-sample mask (on a GPU the check would wait)
            mask = attention_mask(layout, None, device)
        else:
            mask = attention_mask(layout, key_valid)
        x = torch.cat([prefix.tokens, *parts], 1)
        cond = self._conditioning(tau_video, tau_action)
        slots = _slots(prefix.layout, device) if self.frame_local else None
        out, _ = self.backbone(x, cond, self._cond_index(layout, device), mask, slots=slots)
        pred = self._as_velocity(self._heads(out, layout), future_x, tau_video, prefix.future_base)
        if self.env_state_head is not None and prefix.encoded is not None:  # env_state_source=encoder
            pred.env_state = self.env_state_head(prefix.encoded.to(out.dtype))
        elif self.env_state_head is not None and self.config.env_state_source == "backbone":
            obs = out[:, layout.slices()[Group.OBS]]  # [B, Th*V*n, D]
            newest = obs.reshape(B, self.config.history, -1, self.dim)[:, -1]  # [B, V*n, D]
            pred.env_state = self.env_state_head(newest)
        return pred

    def cache_prefix(self, prefix: Prefix) -> KVCache:
        """Run the prefix through every layer once and keep its keys/values."""
        B, device = prefix.tokens.shape[0], prefix.tokens.device
        zeros = torch.zeros(B, device=device)
        mask = attention_mask(prefix.layout, prefix.key_valid)
        _, cache = self.backbone(prefix.tokens, self._conditioning(zeros, zeros),
                                 self._cond_index(prefix.layout, device), mask, return_cache=True)
        return self.readable(cache.layers, prefix.layout, prefix.key_valid, prefix.future_base)

    def readable(self, layers: list[tuple[Tensor, Tensor]], layout: TokenLayout, key_valid: Tensor,
                 future_base: Tensor | None = None) -> KVCache:
        """The prefix's per-layer keys/values as the generated tokens read them: a frame-local
        prefix's with each slot's offsets added (``Attention.slot_kv``)."""
        if self.frame_local:
            slots = _slots(layout, key_valid.device)
            offsets = [block.attn.slot_offsets(slots) for block in self.backbone.blocks]
            layers = [(k + ek.to(k.dtype), v + ev.to(v.dtype)) for (k, v), (ek, ev) in zip(layers, offsets)]
        return KVCache(list(layers), key_valid, layout, future_base)

    # ------------------------------------------------------------------ streaming (frame-local prefix)

    def cache_language(self, batch: Batch) -> tuple[list[tuple[Tensor, Tensor]], Tensor] | None:
        """The instruction's per-layer keys/values [B,h,L,d] and mask [B,L], once per episode (it
        reads itself only), or None for a model without language."""
        language = self.language_tokens(batch)
        if language is None:
            return None
        tokens, mask = language
        layout = TokenLayout.build(language=tokens.shape[1])
        zeros = torch.zeros(tokens.shape[0], device=tokens.device)
        _, cache = self.backbone(tokens, self._conditioning(zeros, zeros), self._cond_index(layout, tokens.device),
                                 attention_mask(layout, mask), return_cache=True)
        return cache.layers, mask

    def cache_frame(self, language: tuple[list[tuple[Tensor, Tensor]], Tensor] | None, frames: Tensor,
                    state: Tensor) -> list[tuple[Tensor, Tensor]]:
        """One observation step's per-layer keys/values [B,h,1+V*n,d] (its state token, then its
        frames' tokens) in a frame-local prefix: they read the instruction's (``cache_language``)
        and themselves only, so they hold for every chunk whose history holds this step.
        ``frames`` [B,V,C,H,W], ``state`` [B,S]."""
        if not self.frame_local:
            raise ValueError("cache_frame needs model.prefix_attention=frame_local")
        encoded = self.encode_obs(frames[:, None])  # [B,1,V,n,Dobs]
        tokens = torch.cat([self.state_tokens(state[:, None], encoded),
                            self.obs_tokens(frames[:, None], encoded=encoded).flatten(1, 3)], 1)
        B, n, device = tokens.shape[0], tokens.shape[1], tokens.device
        lengths, valid, cache = {"state": 1, "obs": n - 1}, [torch.ones(B, n, dtype=torch.bool, device=device)], None
        if language is not None:
            lengths["language"] = language[1].shape[1]
            valid.insert(0, language[1])
            cache = KVCache(language[0])
        layout = TokenLayout.build(frames=1, **lengths)
        P = len(layout) - n
        mask = attention_mask(layout, torch.cat(valid, 1))[:, :, P:]
        zeros = torch.zeros(B, device=device)
        _, kept = self.backbone(tokens, self._conditioning(zeros, zeros), self._cond_index(layout, device, skip=P),
                                mask, cache=cache, return_cache=True)
        return kept.layers

    def assemble_prefix(self, language: tuple[list[tuple[Tensor, Tensor]], Tensor] | None,
                        frames: list[list[tuple[Tensor, Tensor]]], valid: Tensor,
                        future_base: Tensor | None = None) -> KVCache:
        """The readable prefix cache of a chunk from stored pieces: the instruction's and, oldest
        first, each history slot's ``cache_frame`` (``valid`` [B,Th]: False for a slot before the
        episode's first step). Equal to ``cache_prefix(embed_prefix(batch))`` of the same batch."""
        Th = len(frames)
        B = valid.shape[0]
        n = frames[0][0][0].shape[2]  # 1 + V*n tokens per step
        layers = []
        for i in range(len(self.backbone.blocks)):
            ks = ([language[0][i][0]] if language is not None else []) + [f[i][0][:, :, :1] for f in frames] \
                + [f[i][0][:, :, 1:] for f in frames]
            vs = ([language[0][i][1]] if language is not None else []) + [f[i][1][:, :, :1] for f in frames] \
                + [f[i][1][:, :, 1:] for f in frames]
            layers.append((torch.cat(ks, 2), torch.cat(vs, 2)))
        lengths = {"state": Th, "obs": Th * (n - 1)}
        key_valid = [valid, valid[:, :, None].expand(B, Th, n - 1).flatten(1)]
        if language is not None:
            lengths["language"] = language[1].shape[1]
            key_valid.insert(0, language[1])
        layout = TokenLayout.build(frames=Th, **lengths)
        return self.readable(layers, layout, torch.cat(key_valid, 1), future_base)

    def forward_cached(self, cache: KVCache, future_x: Tensor | None, action_x: Tensor | None, tau_video: Tensor,
                       tau_action: Tensor) -> Prediction:
        """Only the generated tokens, reading the cached prefix. ``None`` = group absent."""
        parts, lengths = self._generated(future_x, action_x)
        if not parts:
            raise ValueError("forward_cached needs future frames, actions, or both")
        prefix_layout: TokenLayout = cache.layout
        layout = prefix_layout.extend(**lengths)
        x = torch.cat(parts, 1)
        B, Ng, device = x.shape[0], x.shape[1], x.device
        Np = len(prefix_layout)
        key_valid = torch.cat([cache.key_valid, torch.ones(B, Ng, dtype=torch.bool, device=device)], 1)
        mask = attention_mask(layout, key_valid)[:, :, Np:]  # [B,1,Ng,Np+Ng]
        out, _ = self.backbone(x, self._conditioning(tau_video, tau_action),
                               self._cond_index(layout, device, skip=Np), mask, cache=cache)
        return self._as_velocity(self._heads(out, layout, offset=Np), future_x, tau_video, cache.future_base)


@device_cache
def _slots(layout: TokenLayout, device: torch.device) -> Tensor:
    """[Np] the prefix tokens' history slots (``TokenLayout.slots``), made on ``device`` once per layout."""
    return layout.slots().to(device)


@device_cache
def _cond_index(layout: TokenLayout, device: torch.device, skip: int) -> Tensor:
    """[N - skip] each token's slot in the conditioning table, made on ``device`` once per layout."""
    slots = torch.tensor([_GROUP_SLOT[g] for g in GROUP_ORDER])
    return slots[layout.group_ids()][skip:].to(device)


def build_obs_encoder(c: VidActConfig, weights: bool = True) -> nn.Module | None:
    """The observation encoder, or None when observed frames go through the frame tokenizer."""
    if c.obs_encoder.kind == "timm":
        return TimmObsEncoder(c.obs_encoder, c.channels, c.height, c.width, weights=weights)
    if c.obs_encoder.kind == "patch":
        if c.height % c.obs_encoder.patch_size or c.width % c.obs_encoder.patch_size:
            raise ValueError(f"model.obs_encoder.patch_size={c.obs_encoder.patch_size} must divide the frame size "
                             f"{c.height}x{c.width}")
        return PatchTokenizer(c.channels, c.height, c.width, c.obs_encoder.patch_size)
    if c.obs_encoder.kind == "keypoints":
        return KeypointObsEncoder(c.obs_encoder, c.channels, c.height, c.width)
    if c.obs_encoder.kind == "vit":
        return ViTObsEncoder(c.obs_encoder, c.channels, c.height, c.width)
    return None


def describe(model: VidAct) -> str:
    """A start-up line: flavor, sizes, parameter counts."""
    c = model.config
    D, depth, heads = c.size
    total, trainable = model.num_parameters(), model.num_parameters(trainable_only=True)
    return (f"VidAct flavor={c.flavor} dim={D} depth={depth} heads={heads} | parameters: {trainable / 1e6:.3f}M "
            f"trainable, {total / 1e6:.3f}M total | tokens/frame={model.tokens_per_frame} "
            f"future tokens={model.future_tokens} chunk={c.chunk_length}x{c.action_dim}")


__all__ = ["VidAct", "VidActConfig", "Prefix", "Prediction", "describe", "pad_embeddings"]
