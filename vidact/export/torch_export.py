"""``vidact export RUN OUT --format torch_export``: the ``policy_fast`` path as a ``torch.export``
program, ``OUT/policy_fast.pt2``, beside the normal bundle.

The program is tensors in, actions out; the prefix is encoded once into the KV cache, then the
sampler's fixed number of Euler (or Heun) steps are unrolled by ``vidact.generative.sample``'s own
integrator (``integrate``, ``guided_velocity``), on the same tau grid / shift as ``Sampler``:

    inputs   obs_frames [B,Th,V,C,H,W] float in [0,1] (the Policy's preprocessed frames)
             state [B,Th,S] raw units, obs_is_pad [B,Th] bool
             text_embeddings [B,L,E], text_mask [B,L] bool  (only when the model has a text
                 encoder: instructions are strings, so they are encoded outside the graph, and
                 padded to the encoder's max_length L with the mask False: ``text_inputs``)
             noise [B,K,A] the initial action noise (normalized space)
    output   actions [B,K,A] denormalized (not clipped to the bundle's bounds)

Shapes are fixed at the export's example (B=1, L=max_length); ``vidact_policy_fast.json`` beside
it records them. Running it without vidact's model classes (the text embeddings precomputed, e.g.
with ``text_inputs``)::

    import torch
    prog = torch.export.load("OUT/policy_fast.pt2").module()
    g = torch.Generator().manual_seed(seed)   # Sampler's order: video noise first, then actions
    torch.randn(1, Nf, Dl, generator=g); noise = torch.randn(1, K, A, generator=g)
    actions = prog(obs_frames, state, obs_is_pad, text_embeddings, text_mask, noise)

``load_exported(path)`` does the first two lines, ``draw_action_noise`` the next two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from vidact.types import Batch

EXPORT_NAME = "policy_fast.pt2"
EXPORT_INFO_NAME = "vidact_policy_fast.json"
PARITY_TOLERANCE = 1e-4


class ExportParityError(RuntimeError):
    """The exported program's actions differ from the PyTorch sampler's by more than the tolerance."""


class PolicyFastProgram(nn.Module):
    """``Sampler.sample(batch, "policy_fast")`` with the noise as an input, tensors only."""

    def __init__(self, model, sampler_config):
        super().__init__()
        from vidact.generative.schedule import tau_grid

        self.model = model
        self.method = sampler_config.method
        self.guidance = float(sampler_config.guidance_scale)
        self.grid = tau_grid(sampler_config.steps, sampler_config.shift)
        self.has_text = model.text_encoder is not None

    def forward(self, obs_frames: Tensor, state: Tensor, obs_is_pad: Tensor, *rest: Tensor) -> Tensor:
        from vidact.generative.sample import guided_velocity, integrate, prefix_caches
        from vidact.generative.schedule import MODE_ROLES, Mode
        from vidact.types import Batch

        model = self.model
        if self.has_text:
            text_embeddings, text_mask, noise = rest
        else:
            (noise,) = rest
            text_embeddings = text_mask = None
        B = obs_frames.shape[0]
        batch = Batch(obs_frames=obs_frames, state=state, text=[""] * B, obs_is_pad=obs_is_pad,
                      text_embeddings=text_embeddings, text_mask=text_mask)
        # Sampler.sample's own steps (prefix caches, guided velocity, integrator), with the noise given.
        cache, uncond = prefix_caches(model, batch, self.guidance)
        roles = MODE_ROLES[Mode.POLICY_FAST]
        velocity = guided_velocity(model, cache, uncond, roles, B, obs_frames.device, self.guidance)
        dtype = next(model.backbone.parameters()).dtype
        _, xa = integrate(velocity, None, noise.to(dtype), roles, self.grid, self.method)
        return model.normalizer.unnormalize("action", xa.float())


def _export(program: nn.Module, inputs: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    from vidact.models.layout import _mask

    # TokenLayout.mask() is lru-cached: masks first built while tracing would be cached as fake
    # tensors and break every later eager call, so drop whatever the trace put there.
    try:
        return torch.export.export(program, inputs)
    finally:
        _mask.cache_clear()


def load_exported(path: str | Path) -> nn.Module:
    """``OUT/policy_fast.pt2`` (or its bundle folder) -> a callable module; no vidact classes needed."""
    path = Path(path)
    if path.is_dir():
        path = path / EXPORT_NAME
    return torch.export.load(str(path)).module()


def text_inputs(model, texts: list[str]) -> tuple[Tensor, Tensor]:
    """Instructions -> (embeddings [B,L,E], mask [B,L]) padded to the text encoder's max_length
    (the program's fixed text length; padded tokens are masked out, as the sampler's own padding)."""
    emb, mask = model.text_encoder(list(texts))
    L = model.text_encoder.max_length
    if emb.shape[1] > L:
        raise ValueError(f"instruction encoded to {emb.shape[1]} tokens, more than max_length={L}")
    pad = L - emb.shape[1]
    emb = torch.cat([emb, emb.new_zeros(emb.shape[0], pad, emb.shape[2])], 1)
    mask = torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], 1)
    return emb, mask


def draw_action_noise(model, batch_size: int, seed: int) -> Tensor:
    """The action noise ``Sampler.sample`` starts from for ``seed``."""
    from vidact.generative.sample import initial_noise

    return initial_noise(model, batch_size, seed)[1]


def example_inputs(policy, seed: int = 0, task: str = "push the square to the target"
                   ) -> tuple[tuple[Tensor, ...], Batch]:
    """A realistic input: a random uint8 observation through the Policy's own preprocessing;
    returns (program inputs, the Batch the PyTorch sampler takes)."""
    c = policy.config
    rng = np.random.default_rng(seed)
    obs = {k: rng.integers(0, 256, (c.height, c.width, c.channels), dtype=np.uint8) for k in policy.camera_keys}
    obs[policy.state_key] = rng.standard_normal(c.state_dim).astype(np.float32)
    obs["task"] = task
    policy.reset()
    batch, _ = policy._batch(obs)
    inputs = [batch.obs_frames, batch.state, batch.obs_is_pad]
    if policy.model.text_encoder is not None:
        inputs += list(text_inputs(policy.model, batch.text))
    inputs.append(draw_action_noise(policy.model, batch.batch_size, seed))
    return tuple(inputs), batch


@torch.no_grad()
def export_policy_fast(bundle: str | Path, seed: int = 0, tolerance: float | None = None, log=print) -> float:
    """Export ``bundle``'s policy_fast path to ``bundle/policy_fast.pt2``, check it against the
    PyTorch sampler on the same inputs and noise; returns the max |diff| (raises above tolerance)."""
    from vidact.deploy.policy import Policy
    from vidact.generative.schedule import Mode

    tolerance = PARITY_TOLERANCE if tolerance is None else tolerance
    bundle = Path(bundle)
    policy = Policy.from_pretrained(bundle, mode=Mode.POLICY_FAST)
    program = PolicyFastProgram(policy.model, policy.sampler.config).eval()
    inputs, batch = example_inputs(policy, seed)
    exported = _export(program, inputs)
    torch.export.save(exported, str(bundle / EXPORT_NAME))

    reference = policy.sampler.sample(batch, Mode.POLICY_FAST, seed=seed).actions.float()
    got = load_exported(bundle / EXPORT_NAME)(*inputs).float()
    err = float((got - reference).abs().max())
    log(f"torch.export parity: max |diff| = {err:.3e}")
    names = ["obs_frames", "state", "obs_is_pad"] + (["text_embeddings", "text_mask"] if program.has_text else [])
    info = {"file": EXPORT_NAME, "mode": "policy_fast", "torch": torch.__version__,
            "inputs": {n: {"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
                       for n, x in zip(names + ["noise"], inputs)},
            "output": {"actions": list(reference.shape)},
            "sampler": {"method": program.method, "steps": len(program.grid) - 1, "grid": program.grid,
                        "guidance_scale": program.guidance},
            "text_encoder": policy.info.get("text_encoder"),
            "parity": {"seed": seed, "max_abs_diff": err, "tolerance": tolerance}}
    (bundle / EXPORT_INFO_NAME).write_text(json.dumps(info, indent=2))
    if not err <= tolerance:
        raise ExportParityError(f"torch.export parity check failed: max |diff| = {err:.3e} > {tolerance:.0e} "
                                f"between {bundle / EXPORT_NAME} and the PyTorch sampler")
    return err
