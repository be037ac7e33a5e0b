"""``vidact dry-run RECIPE``: validate the config, build the model, run one loss + backward and
one sample of every mode on a fake batch, and print the plan. No GPU, no data needed."""

from __future__ import annotations

import time

import torch

from vidact.config import load, to_yaml
from vidact.data.fake import fake_batch
from vidact.generative import Mode, Sampler, training_loss
from vidact.models import VidAct, describe


def dry_run(recipe: str, overrides: list[str], batch_size: int = 2) -> int:
    cfg = load(recipe, overrides)
    print(f"# resolved config ({recipe})\n{to_yaml(cfg)}")
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = VidAct(cfg.model)
    print(f"built in {time.perf_counter() - t0:.2f}s: {describe(model)}")

    batch = fake_batch(cfg.model, batch_size, seed=cfg.seed)
    prefix = model.embed_prefix(batch)
    rows = [(g.value, n) for g, n in prefix.layout.lengths]
    rows += [("future", model.future_tokens), ("action", cfg.model.chunk_length)]
    print("token layout (per sample):")
    for name, n in rows:
        print(f"  {name:<9}{n:>6}")
    print(f"  {'total':<9}{sum(n for _, n in rows):>6}   "
          f"(policy_fast runs {sum(n for _, n in rows) - model.future_tokens})")
    print(f"effective batch size: {cfg.train.batch_size} per device")

    t0 = time.perf_counter()
    out = training_loss(model, batch, cfg.generative, torch.Generator().manual_seed(cfg.seed))
    out.loss.backward()
    print(f"loss {out.loss.item():.4f} (video {out.video_loss.item():.4f}, action {out.action_loss.item():.4f}) "
          f"+ backward in {time.perf_counter() - t0:.2f}s; modes {out.mode_counts}")
    if not torch.isfinite(out.loss):
        print("dry-run: loss is not finite")
        return 1

    model.eval()
    sampler = Sampler(model, cfg.sampler)
    for mode in Mode:
        if model.future_tokens == 0 and mode != Mode.POLICY_FAST:
            continue
        t0 = time.perf_counter()
        res = sampler.sample(batch, mode)
        shapes = {k: list(v.shape) for k, v in (("actions", res.actions), ("future_frames", res.future_frames))
                  if v is not None}
        print(f"sample {mode.value:<17} {1000 * (time.perf_counter() - t0):7.1f} ms  {shapes}")
    print("dry-run OK")
    return 0
