"""Deployment latency: one action chunk from a raw LeRobot observation, end to end.

    .venv/bin/python bench/bench_latency.py --flavors tiny S --steps 10 5 --calls 20

What is timed, per (flavor, mode, sampler steps): ``Policy.predict_chunk`` on a MetaWorld-shaped
observation as ``lerobot-eval`` hands it over (480x480 CHW float camera, resized to the model's
96x96 inside), in process, and the same call through ``vidact serve`` (websocket + msgpack on
localhost, ``PolicyClient.infer``). Weights are random (latency does not depend on training);
``--bundle`` times an exported bundle instead. Shapes default to the MetaWorld recipe
(configs/model/metaworld_96.yaml: 96x96, 2 history frames, 1 future frame, 16x4 chunk, patch 12).
Reports median and 90th percentile over ``--calls`` calls after 2 warm-up calls.

``--recompute`` (a frame-local bundle) times the prefix recomputed every chunk beside the
streaming policy, which computes each observation step's keys and values once.

``--lerobot act diffusion`` adds LeRobot's own policies in the same run, at their default sizes
(random weights, no ImageNet backbone download) on the same observation: one
``select_action`` per call after ``reset()`` and LeRobot's preprocessor pipeline, i.e. with an
empty action queue, so every call predicts a whole chunk; diffusion at each of ``--steps`` denoising steps and its own
default (100). No server column for them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vidact.deploy.client import PolicyClient
from vidact.deploy.policy import Policy
from vidact.deploy.server import PolicyServer
from vidact.generative.sample import SamplerConfig
from vidact.models import VidAct, VidActConfig
from vidact.models.configuration import FrameTokenizerConfig

METAWORLD = dict(height=96, width=96, channels=3, views=1, history=2, future_frames=1, future_frame_stride=8,
                 chunk_length=16, state_dim=4, action_dim=4, frame_tokenizer=FrameTokenizerConfig(kind="patch", patch_size=12))


def observation(size: int) -> dict:
    return {"observation.image": torch.rand(3, size, size), "observation.state": np.zeros(4, np.float32),
            "task": "Press a button from the top"}


def percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times) * 1000, times[min(len(times) - 1, int(0.9 * len(times)))] * 1000


def time_calls(fn, calls: int) -> tuple[float, float]:
    for _ in range(2):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def build(flavor: str, bundle: str | None, mode: str, steps: int, compiled: bool = False,
          streaming: bool = True) -> Policy:
    if bundle:
        return Policy.from_pretrained(bundle, mode=mode, steps=steps, compiled=compiled, streaming=streaming)
    torch.manual_seed(0)
    model = VidAct(VidActConfig(flavor=flavor, **METAWORLD))
    return Policy(model, SamplerConfig(steps=steps), {"cameras": {"keys": ["observation.image"]}}, mode,
                  compiled=compiled)


def lerobot_policy(kind: str, image_size: int, steps: int | None):
    """LeRobot's ``kind`` policy with its default config for MetaWorld's features, random weights."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_policy_config, make_pre_post_processors, get_policy_class

    cfg = make_policy_config(kind, device="cpu", pretrained_backbone_weights=None)
    cfg.input_features = {"observation.image": PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size)),
                          "observation.state": PolicyFeature(FeatureType.STATE, (4,))}
    cfg.output_features = {"action": PolicyFeature(FeatureType.ACTION, (4,))}
    if kind == "diffusion":
        cfg.crop_shape = None  # the 84x84 default crop assumes 96x96 inputs
        if steps:
            cfg.num_inference_steps = steps
    torch.manual_seed(0)
    policy = get_policy_class(kind)(cfg).eval()
    pre, _ = make_pre_post_processors(cfg, dataset_stats=None)
    return policy, pre


def time_lerobot(kind: str, args) -> None:
    steps_list = [*args.steps, None] if kind == "diffusion" else [None]
    for steps in steps_list:
        policy, pre = lerobot_policy(kind, args.image_size, steps)
        obs = observation(args.image_size)
        batch = {"observation.image": obs["observation.image"][None], "observation.state":
                 torch.from_numpy(obs["observation.state"])[None], "task": [obs["task"]]}

        def chunk():
            policy.reset()
            with torch.no_grad():  # an empty queue: select_action predicts a whole chunk
                return policy.select_action(pre(batch))

        calls = args.calls if kind != "diffusion" or steps else max(2, args.calls // 5)
        local = time_calls(chunk, calls)
        params = sum(p.numel() for p in policy.parameters()) / 1e6
        n = steps or getattr(policy.config, "num_inference_steps", None) or "-"
        print(f"| lerobot {kind} | {params:.2f}M | chunk of {policy.config.n_action_steps if kind == 'act' else policy.config.horizon} "
              f"| {n} | {local[0]:.1f} / {local[1]:.1f} | - |", flush=True)


def profile_calls(fn, n: int) -> None:
    """cProfile of ``n`` calls: the vidact and torch functions by cumulative time, ms per call."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        fn()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = sorted(((v[3], f"{Path(k[0]).name}:{k[2]}") for k, v in stats.items()
                   if "vidact" in k[0] or k[0] == "~"), reverse=True)
    for cumulative, name in rows[:12]:
        print(f"    {1000 * cumulative / n:7.2f} ms per call  {name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavors", nargs="+", default=["tiny", "S"])
    parser.add_argument("--bundle", default=None, help="time this exported bundle instead of random flavors")
    parser.add_argument("--modes", nargs="+", default=["policy_fast", "policy"])
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 5])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=480, help="incoming camera resolution (lerobot-eval: 480)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also print where the time of N "
                        "in-process calls goes (cProfile, by cumulative time)")
    parser.add_argument("--compile", action="store_true", help="also time each setting with the backbone "
                        "torch.compiled (Policy(compiled=True); the warm-up calls compile)")
    parser.add_argument("--recompute", action="store_true", help="a frame-local bundle (model.prefix_attention): "
                        "also time each setting with the whole prefix recomputed every chunk (Policy(streaming=False))")
    parser.add_argument("--lerobot", nargs="*", default=[], choices=["act", "diffusion"],
                        help="also time LeRobot's own policies (default sizes) on the same observation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, camera {args.image_size}x{args.image_size}")
    print("| model | params | mode | steps | in-process median / p90 ms | via server median / p90 ms |")
    print("|---|---:|---|---:|---:|---:|")
    for flavor in ([args.bundle] if args.bundle else args.flavors):
        for mode in args.modes:
            settings = [(s, c, r) for s in args.steps for c in [False] + [True] * args.compile
                        for r in [False] + [True] * args.recompute]
            for steps, compiled, recompute in settings:
                policy = build(flavor, args.bundle, mode, steps, compiled, streaming=not recompute)
                obs = observation(args.image_size)
                local = time_calls(lambda: policy.predict_chunk(obs), args.calls)
                if args.profile:
                    profile_calls(lambda: policy.predict_chunk(obs), args.profile)
                remote = None
                if not args.no_server:
                    server = PolicyServer(policy, "127.0.0.1", 0).start()
                    with PolicyClient("127.0.0.1", server.port) as client:
                        wire = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in obs.items()}
                        remote = time_calls(lambda: client.infer(wire), args.calls)
                    server.stop()
                params = sum(p.numel() for p in policy.model.parameters()) / 1e6
                far = f"{remote[0]:.1f} / {remote[1]:.1f}" if remote else "-"
                how = "".join([" (compiled)" * compiled, " (prefix recomputed)" * recompute,
                               " (streaming)" * (policy.streaming and not recompute)])
                print(f"| {flavor}{how} | {params:.2f}M | {mode} | {steps} | "
                      f"{local[0]:.1f} / {local[1]:.1f} | {far} |", flush=True)
    for kind in args.lerobot:
        time_lerobot(kind, args)


if __name__ == "__main__":
    main()
