"""The token layout and its attention rules, as declared data (octo's ``AttentionRule`` idea).

One sequence per sample::

    [ language | state | observed frames | future frames (noisy) | action chunk (noisy) ]
      \\_______________ prefix _______________/ \\__________ generated __________/

Rules say which groups a group's queries may read. The defaults keep the prefix blind to the
generated groups, so the prefix is encoded once per chunk and its keys/values reused at every
denoising step (``VidAct.cache_prefix``). Future frames and actions read each other: joint
co-generation (GR-2 / PAD). Dropping a group (``policy_fast`` drops the future frames, ``video``
drops the actions) is the same as masking it out as keys, which is how training rehearses it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor
from torch._guards import detect_fake_mode


class Group(str, enum.Enum):
    LANGUAGE = "language"
    STATE = "state"
    OBS = "obs"
    FUTURE = "future"
    ACTION = "action"


GROUP_ORDER: tuple[Group, ...] = tuple(Group)
PREFIX_GROUPS: tuple[Group, ...] = (Group.LANGUAGE, Group.STATE, Group.OBS)
GENERATED_GROUPS: tuple[Group, ...] = (Group.FUTURE, Group.ACTION)


@dataclass(frozen=True)
class AttentionRule:
    """Queries of ``query`` may attend to keys of every group in ``keys``."""

    query: Group
    keys: frozenset[Group]


def rules(table: dict[Group, tuple[Group, ...]]) -> tuple[AttentionRule, ...]:
    return tuple(AttentionRule(q, frozenset(k)) for q, k in table.items())


DEFAULT_RULES: tuple[AttentionRule, ...] = rules({
    Group.LANGUAGE: (Group.LANGUAGE,),
    Group.STATE: PREFIX_GROUPS,
    Group.OBS: PREFIX_GROUPS,
    Group.FUTURE: GROUP_ORDER,
    Group.ACTION: GROUP_ORDER,
})


@dataclass(frozen=True)
class TokenLayout:
    """Group lengths (in sequence order) plus attention rules.

    ``frames`` > 0 (``model.prefix_attention="frame_local"``): the state and observed-frame tokens
    form that many history slots (state token i and the i-th frame's tokens are slot i), and a
    prefix token reads the language and its own slot only, so a frame's keys and values do not
    depend on the other frames or on its slot: computed once when the frame arrives, they are
    reused by every later chunk that still sees the frame. The generated groups read every slot."""

    lengths: tuple[tuple[Group, int], ...]
    rules: tuple[AttentionRule, ...] = DEFAULT_RULES
    frames: int = 0

    @classmethod
    def build(cls, rules_: tuple[AttentionRule, ...] = DEFAULT_RULES, frames: int = 0, **lengths: int) -> "TokenLayout":
        """``TokenLayout.build(language=7, state=1, obs=64, future=64, action=16)``; zero-length or
        missing groups are left out (a dropped group)."""
        unknown = set(lengths) - {g.value for g in Group}
        if unknown:
            raise KeyError(f"unknown token groups {sorted(unknown)}; groups are {[g.value for g in Group]}")
        ordered = tuple((g, int(lengths[g.value])) for g in GROUP_ORDER if lengths.get(g.value, 0) > 0)
        return cls(ordered, rules_, frames)

    def extend(self, **lengths: int) -> "TokenLayout":
        """This layout (rules, slots) with the groups ``lengths`` added (the generated tokens after a prefix)."""
        return TokenLayout.build(self.rules, self.frames, **{g.value: n for g, n in self.lengths}, **lengths)

    def slots(self) -> Tensor:
        """[N] each token's history slot (``frames`` > 0): state token i and frame i's tokens are slot
        i; -1 for every other token."""
        ids = []
        for g, n in self.lengths:
            if self.frames and g in (Group.STATE, Group.OBS):
                if n % self.frames:
                    raise ValueError(f"{n} {g.value} tokens do not split into {self.frames} history slots")
                ids.append(torch.arange(n) // (n // self.frames))
            else:
                ids.append(torch.full((n,), -1, dtype=torch.long))
        return torch.cat(ids)

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(g for g, _ in self.lengths)

    def __len__(self) -> int:
        return sum(n for _, n in self.lengths)

    def length(self, group: Group) -> int:
        return dict(self.lengths).get(group, 0)

    def slices(self) -> dict[Group, slice]:
        out, start = {}, 0
        for g, n in self.lengths:
            out[g] = slice(start, start + n)
            start += n
        return out

    def keys_of(self, query: Group) -> frozenset[Group]:
        for rule in self.rules:
            if rule.query == query:
                return rule.keys
        return frozenset()

    def group_ids(self) -> Tensor:
        """[N] index of each token's group in ``GROUP_ORDER``."""
        return torch.cat([torch.full((n,), GROUP_ORDER.index(g), dtype=torch.long) for g, n in self.lengths])

    def mask(self) -> Tensor:
        """[N, N] bool, True where query i may attend to key j. Every token sees itself, so no row
        is ever empty even when a sample masks out whole groups."""
        return _mask(self)

    def restrict(self, groups: tuple[Group, ...]) -> "TokenLayout":
        """The same rules over a subset of the groups (how a dropped group is physically removed)."""
        return TokenLayout(tuple((g, n) for g, n in self.lengths if g in groups), self.rules, self.frames)

    def check(self) -> None:
        """Invariants the sampler relies on; raises with the offending rule."""
        for g in self.groups:
            if g not in self.keys_of(g):
                raise ValueError(f"attention rule for {g.value!r} must let it attend to itself")
        for g in PREFIX_GROUPS:
            leaked = self.keys_of(g) & set(GENERATED_GROUPS)
            if leaked:
                raise ValueError(f"prefix group {g.value!r} attends to generated groups "
                                 f"{sorted(x.value for x in leaked)}; the prefix could not be cached")


def device_cache(fn):
    """``lru_cache`` for small per-layout tensors, bypassed while ``torch.export`` traces with fake
    tensors (cached fakes would be handed to every later eager call)."""
    cached = lru_cache(maxsize=256)(fn)

    def call(*args):
        return fn(*args) if detect_fake_mode() is not None else cached(*args)

    call.cache_clear = cached.cache_clear
    call.__doc__ = fn.__doc__
    return call


@device_cache
def _mask(layout: TokenLayout) -> Tensor:
    N = len(layout)
    m = torch.zeros(N, N, dtype=torch.bool)
    sl = layout.slices()
    for q in layout.groups:
        for k in layout.keys_of(q):
            if k in sl:
                m[sl[q], sl[k]] = True
    if layout.frames:  # frame-local prefix: a slot's tokens read no other slot
        slot = layout.slots()
        framed = slot >= 0
        m[framed[:, None] & framed[None, :] & (slot[:, None] != slot[None, :])] = False
    m |= torch.eye(N, dtype=torch.bool)
    return m


@device_cache
def _on_device(layout: TokenLayout, device: torch.device) -> tuple[Tensor, Tensor]:
    """(mask [N,N], eye [N,N]) on ``device``, made once: no host-to-device copy per call, which
    also keeps a CUDA graph's capture free of them."""
    m = layout.mask().to(device)
    return m, torch.eye(m.shape[0], dtype=torch.bool, device=device)


def attention_mask(layout: TokenLayout, key_valid: Tensor | None, device: torch.device | str | None = None) -> Tensor:
    """[B,1,N,N] (or [N,N] without per-sample masks): the layout's rules AND per-sample key validity
    ([B,N] bool, False for padding and for groups a sample drops). The diagonal stays True."""
    device = torch.device(key_valid.device if key_valid is not None else (device or "cpu"))
    static, eye = _on_device(layout, device)
    if key_valid is None:
        return static
    return ((static & key_valid[:, None, :]) | eye)[:, None]


@device_cache
def _group_tables(layout: TokenLayout, device: torch.device) -> tuple[Tensor, Tensor]:
    """(group id per token [N], allowed [G,G]: may a query of group i read keys of group j)."""
    allowed = torch.zeros(len(GROUP_ORDER), len(GROUP_ORDER), dtype=torch.bool)
    for q in layout.groups:
        for k in layout.keys_of(q):
            allowed[GROUP_ORDER.index(q), GROUP_ORDER.index(k)] = True
    return layout.group_ids().to(device), allowed.to(device)


def flex_block_mask(layout: TokenLayout, key_valid: Tensor):
    """The same mask as ``attention_mask`` as a FlexAttention BlockMask ([B,N] ``key_valid``), for
    ``Transformer.attention_backend = "flex"``: the kernel skips blocks no query may read and
    never materializes a [B,N,N] mask."""
    from torch.nn.attention.flex_attention import create_block_mask

    if layout.frames:
        raise ValueError("a frame-local prefix (model.prefix_attention=frame_local) runs on SDPA, not flex attention")
    B, N = key_valid.shape
    gid, allowed = _group_tables(layout, key_valid.device)

    def mask_mod(b, h, q, kv):
        return (allowed[gid[q], gid[kv]] & key_valid[b, kv]) | (q == kv)

    return create_block_mask(mask_mod, B, None, N, N, device=key_valid.device)
