"""The backbone: a DiT-style transformer with per-token AdaLN-Zero conditioning and SDPA.

Conditioning is per token, through a small table of condition vectors (``cond`` [B,M,D]) and an
index per token (``cond_index`` [N] into M). Every token carries its own modality's noise level
this way (UWM's independent tau per modality) without an AdaLN projection per token: the
projection runs on M vectors per sample and is gathered (``index_select``: its backward is an
``index_add``, cheaper on CPU than the ``index_put`` that ``x[:, index]``'s backward runs; the
step-time gain is not yet measured on an idle machine, see docs/notes.md, session 13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def layer_norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """LayerNorm without affine, in ``x``'s own dtype. Under autocast ``F.layer_norm`` is an fp32
    op: bf16 activations were read, normalized and written back as fp32, and every consumer cast
    them down again; the kernel accumulates in fp32 either way."""
    with torch.autocast(x.device.type, enabled=False):
        return F.layer_norm(x, x.shape[-1:], eps=eps)


def rms_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm`` (an ``nn.RMSNorm`` or ``nn.Identity``) applied in ``x``'s dtype, its weight cast to
    it (under autocast the fp32 weight sent the fused kernel to its unfused fallback)."""
    if not isinstance(norm, nn.RMSNorm):
        return x
    with torch.autocast(x.device.type, enabled=False):
        return F.rms_norm(x, norm.normalized_shape, norm.weight.to(x.dtype), norm.eps)


_compiled_flex = None


def flex_attention(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    """FlexAttention (one fused kernel for the layout's mask), compiled once per process; run
    eagerly on the CPU, where it is a reference implementation (tests compare it with SDPA)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention as flex

    if q.device.type == "cpu":
        return flex(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, frames: int = 0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        # A frame-local prefix (TokenLayout.frames): the history slot of a frame's keys and values
        # is added when the generated tokens read them (a learned key and value offset per slot),
        # not to the frame's tokens, so the stored keys and values hold for any slot.
        self.slot_kv = nn.Parameter(torch.randn(2, frames, dim) * 0.02) if frames else None

    def slot_offsets(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """[Np] history slots of the prefix tokens (-1: none) -> key and value offsets [1,h,Np,d]."""
        table = F.pad(self.slot_kv, (0, 0, 1, 0))  # [2, frames + 1, D]; row 0: no slot
        off = table[:, slots + 1].view(2, len(slots), self.heads, self.head_dim).transpose(1, 2)  # [2,h,Np,d]
        return off[0, None], off[1, None]

    def qkv_heads(self, x: Tensor, fast_norms: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3x[B,h,N,d]
        if not fast_norms:
            return self.q_norm(q), self.k_norm(k), v
        return rms_norm(self.q_norm, q), rms_norm(self.k_norm, k), v

    def forward(self, x: Tensor, mask, past_kv: tuple[Tensor, Tensor] | None = None, fast_norms: bool = True,
                slots: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x [B,N,D]; past_kv: cached prefix keys/values [B,h,Np,d] read by these queries;
        mask [B|1,1,N,Np+N] bool, or a FlexAttention BlockMask (no past_kv then). ``slots`` [Np]:
        x is a whole sequence whose first Np tokens are a frame-local prefix (training): the prefix
        reads its keys as they are, the tokens after it read them with their slot's offsets, as
        they read a cache (``VidAct.cache_prefix``). Returns the output and this call's own (k, v)."""
        B, N, D = x.shape
        q, k, v = self.qkv_heads(x, fast_norms)
        if mask is not None and not isinstance(mask, Tensor):  # a BlockMask (layout.flex_block_mask)
            out = flex_attention(q, k.to(q.dtype), v.to(q.dtype), mask)
            return self.proj(out.transpose(1, 2).reshape(B, N, D)), (k, v)
        if slots is not None and past_kv is None and N > len(slots):
            P = len(slots)
            ek, ev = self.slot_offsets(slots)
            pre = F.scaled_dot_product_attention(q[:, :, :P], k[:, :, :P], v[:, :, :P], attn_mask=mask[..., :P, :P])
            k_read = torch.cat([k[:, :, :P] + ek.to(k.dtype), k[:, :, P:]], 2)
            v_read = torch.cat([v[:, :, :P] + ev.to(v.dtype), v[:, :, P:]], 2)
            gen = F.scaled_dot_product_attention(q[:, :, P:], k_read, v_read, attn_mask=mask[..., P:, :])
            out = torch.cat([pre, gen], 2)
            return self.proj(out.transpose(1, 2).reshape(B, N, D)), (k, v)
        k_all, v_all = (k, v) if past_kv is None else (torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2))
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)  # [B,h,N,d]
        return self.proj(out.transpose(1, 2).reshape(B, N, D)), (k, v)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, frames: int = 0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm, frames)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.adaLN[1].weight)  # adaLN-Zero (DiT): every block starts as the identity
        nn.init.zeros_(self.adaLN[1].bias)

    def forward(self, x: Tensor, cond: Tensor, cond_index: Tensor, mask, past_kv: tuple[Tensor, Tensor] | None = None,
                fast_norms: bool = True, slots: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``cond_index``: [N] long (gathered) or [N,M] bool one-hot (a matmul, whose backward is
        another matmul rather than the gather's scatter-add)."""
        mod = expand_cond(self.adaLN(cond), cond_index)  # [B,M,6D] -> [B,N,6D]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        norm1, norm2 = (layer_norm, layer_norm) if fast_norms else (self.norm1, self.norm2)
        h, kv = self.attn(modulate(norm1(x), shift1, scale1), mask, past_kv, fast_norms, slots)
        x = x + gate1 * h
        x = x + gate2 * self.mlp(modulate(norm2(x), shift2, scale2))
        return x, kv


def expand_cond(table: Tensor, cond_index: Tensor) -> Tensor:
    """[B,M,C] per-condition vectors -> [B,N,C] per token (``cond_index``: see ``Block.forward``)."""
    if cond_index.dim() == 1:
        return table.index_select(1, cond_index)
    return torch.matmul(cond_index.to(table.dtype), table)  # [N,M] @ [B,M,C]


@dataclass
class KVCache:
    """Per-layer prefix keys/values ([B,h,Np,d] each). The model attaches what the generated
    tokens need to read the prefix again: its key validity [B,Np] and layout."""

    layers: list[tuple[Tensor, Tensor]]
    key_valid: Tensor | None = None
    layout: Any = None  # vidact.models.layout.TokenLayout of the prefix
    future_base: Any = None  # [B,Nf,Dl] or None: the prefix's Prefix.future_base


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True,
                 frames: int = 0):
        """``frames`` > 0: a frame-local prefix of that many history slots (``Attention.slot_kv``)."""
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qk_norm, frames) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        nn.init.zeros_(self.final_adaLN[1].weight)
        nn.init.zeros_(self.final_adaLN[1].bias)
        self.gradient_checkpointing = False
        # Kernel choices (no effect on the weights or the function computed, up to rounding; measured
        # in BENCHMARKS.md "Kernel choices on the GPU"): "flex" runs training's full-sequence attention
        # as FlexAttention (vidact.models.layout's flex_block_mask; slower on the H200 than SDPA, which
        # already takes cuDNN's fused kernel with the boolean mask); cached inference stays on SDPA.
        # cond_gather "matmul" expands the per-token AdaLN conditions with a one-hot matmul instead of
        # a gather (-9% step time on the H200, whose scatter-add backward was slow); "auto" = matmul
        # when training on a GPU, the gather otherwise (exact, also under TF32). fast_norms: the
        # LayerNorms and q/k RMSNorms through layer_norm/rms_norm above (False: the modules).
        self.attention_backend = "sdpa"
        self.cond_gather = "auto"
        self.fast_norms = True

    def forward(self, x: Tensor, cond: Tensor, cond_index: Tensor, mask,
                cache: KVCache | None = None, return_cache: bool = False,
                slots: Tensor | None = None) -> tuple[Tensor, KVCache | None]:
        """x [B,N,D] -> [B,N,D]. With ``cache``, x holds only the tokens after the cached prefix
        and ``mask`` covers [prefix + these] keys. With ``return_cache``, keys/values are kept.
        ``slots``: see ``Attention.forward`` (a frame-local prefix's slots, whole sequences only)."""
        kept: list[tuple[Tensor, Tensor]] = []
        if self.cond_gather == "matmul" or (self.cond_gather == "auto" and x.device.type == "cuda"
                                            and torch.is_grad_enabled()):
            cond_index = cond_index[:, None] == torch.arange(cond.shape[1], device=cond.device)  # [N,M] one-hot
        for i, block in enumerate(self.blocks):
            past = cache.layers[i] if cache is not None else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(block, x, cond, cond_index, mask, past, self.fast_norms, slots, use_reentrant=False)
            else:
                x, kv = block(x, cond, cond_index, mask, past, self.fast_norms, slots)
            if return_cache:
                kept.append(kv)
        shift, scale = expand_cond(self.final_adaLN(cond), cond_index).chunk(2, dim=-1)
        out = modulate(layer_norm(x) if self.fast_norms else self.final_norm(x), shift, scale)
        return out, (KVCache(kept) if return_cache else None)


class TimestepEmbedder(nn.Module):
    """tau in [0,1] -> [.., D] via sinusoidal features and an MLP (DiT)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, tau: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=tau.device, dtype=torch.float32) / half)
        args = (tau.float() * 1000)[..., None] * freqs
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))
