"""Model throughput and latency: training samples/s and tokens/s per flavor, utilization against
this machine's own matmul FLOP/s (measured in the same run), and chunk latency per sampling mode.

    .venv/bin/python bench/bench_model.py --flavors tiny S --batch-size 8 --steps 5

Shapes default to the MetaWorld recipe (96x96, 2 history frames, 1 future frame, 16x4 chunk,
patch 12). FLOPs are counted by torch's FlopCounterMode on one forward+backward; utilization =
(FLOPs per step / seconds per step) / (FLOP/s of a large fp32 matmul on the same device).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidact.data.fake import fake_batch
from vidact.generative import GenerativeConfig, Mode, Sampler, SamplerConfig, training_loss
from vidact.models import VidAct, VidActConfig
from vidact.models.configuration import FrameTokenizerConfig


def matmul_flops(device: str, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_config(flavor: str, args) -> VidActConfig:
    return VidActConfig(flavor=flavor, height=args.size, width=args.size, history=2, future_frames=1,
                        chunk_length=16, state_dim=4, action_dim=4,
                        frame_tokenizer=FrameTokenizerConfig(kind="patch", patch_size=args.patch))


def bench_flavor(flavor: str, args, peak: float) -> dict:
    torch.manual_seed(0)
    cfg = model_config(flavor, args)
    model = VidAct(cfg).to(args.device)
    batch = fake_batch(cfg, args.batch_size).to(args.device)
    gen = GenerativeConfig()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        out = training_loss(model, batch, gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        out = training_loss(model, batch, gen, torch.Generator().manual_seed(0))
        out.loss.backward()
    flops = counter.get_total_flops()
    step()
    sync(args.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(args.device)
    dt = (time.perf_counter() - t0) / args.steps
    tokens = len(model.embed_prefix(batch).layout) + model.future_tokens + cfg.chunk_length

    model.eval()
    one = fake_batch(cfg, 1).to(args.device)
    latency = {}
    for mode in (Mode.POLICY_FAST, Mode.POLICY):
        sampler = Sampler(model, SamplerConfig(steps=args.sample_steps))
        sampler.sample(one, mode)
        sync(args.device)
        t0 = time.perf_counter()
        for _ in range(args.latency_reps):
            sampler.sample(one, mode)
        sync(args.device)
        latency[mode.value] = 1000 * (time.perf_counter() - t0) / args.latency_reps
    return dict(flavor=flavor, params=model.num_parameters(True), tokens=tokens, step_s=dt,
                samples_s=args.batch_size / dt, tokens_s=args.batch_size * tokens / dt,
                util=flops / dt / peak, **{f"ms_{k}": v for k, v in latency.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flavors", nargs="+", default=["tiny", "S"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--patch", type=int, default=12)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--latency-reps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    peak = matmul_flops(args.device)
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"threads {torch.get_num_threads()}, fp32 matmul {peak / 1e9:.1f} GFLOP/s")
    print("| flavor | trainable params | tokens/sample | s/step | samples/s | tokens/s | utilization | "
          f"policy_fast ms/chunk ({args.sample_steps} steps) | policy ms/chunk |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for flavor in args.flavors:
        r = bench_flavor(flavor, args, peak)
        print(f"| {r['flavor']} | {r['params'] / 1e6:.2f}M | {r['tokens']} | {r['step_s']:.3f} | {r['samples_s']:.1f} | "
              f"{r['tokens_s']:.0f} | {100 * r['util']:.1f}% | {r['ms_policy_fast']:.1f} | {r['ms_policy']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
