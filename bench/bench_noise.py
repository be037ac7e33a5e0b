"""How much a closed-loop result depends on the sampler's noise: one policy, one task, the same
held-out seeds, evaluated (1) with every episode drawing its own noise (what ``vidact eval``
does), (2) with every episode replaying one shared noise stream (``--shared K``: what
``vidact eval`` did before each episode got its own; one stream per K), and (3) at other
action-noise temperatures (``--noise-scales``). Success is split by where the task's object
started (left / right of x = 0); a scatter per evaluation lands in OUT/positions.png:

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_noise.py outputs/af/bench2400/seed0/state_labels/policy \
        --task button-press-topdown-v3 --episodes 50 --shared 0 1 2 --noise-scales 0.5 0 --out outputs/af/noise
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_positions import object_starts, plot  # noqa: E402

from vidact.deploy.policy import Policy  # noqa: E402
from vidact.deploy.sim import evaluate, set_threads, wilson_interval  # noqa: E402


class SharedNoise(Policy):
    """Every episode replays the noise stream of episode seed ``stream``, whatever seed it is given."""

    stream = 0

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed=self.stream)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--task", default="button-press-topdown-v3")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--shared", nargs="*", type=int, default=[0, 1, 2], help="shared noise streams to evaluate")
    p.add_argument("--noise-scales", nargs="*", type=float, default=[0.5], help="temperatures besides 1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not (Path(args.bundle) / "model.safetensors").is_file():
        sys.exit(f"{args.bundle} is not a policy bundle (no model.safetensors): `vidact export RUN OUT` writes one")
    set_threads(args.threads)
    out = Path(args.out)
    runs = [("independent", "own noise per episode", lambda: Policy.from_pretrained(args.bundle))]
    for k in args.shared:
        def shared(k=k):
            policy = SharedNoise.from_pretrained(args.bundle)
            policy.stream = k
            policy.reset()
            return policy
        runs.append((f"shared{k}", f"one shared noise stream ({k})", shared))
    for s in args.noise_scales:
        runs.append((f"scale{s:g}", f"own noise per episode, noise scale {s:g}",
                     lambda s=s: Policy.from_pretrained(args.bundle, noise_scale=s)))
    rows, files, results = [], [], []
    for name, title, make in runs:
        folder = out / name / "eval" / args.task
        done = folder / "results.json"
        if not done.is_file():
            print(f"== {title}", flush=True)
            evaluate(make(), args.task, args.episodes, folder, max_steps=args.max_steps, videos=0)
        r = json.loads(done.read_text())
        left = object_starts(r)[:, 0] < 0
        success = [bool(e["success"]) for e in r["per_episode"]]
        k_left = sum(ok for ok, is_left in zip(success, left) if is_left)
        lo, hi = wilson_interval(r["successes"], r["episodes"])
        rows.append(f"| {title} | {r['successes']}/{r['episodes']} | {100 * lo:.0f}-{100 * hi:.0f}% | "
                    f"{k_left}/{int(left.sum())} | {r['successes'] - k_left}/{int((~left).sum())} |")
        files.append(done)
        results.append(r)
    table = "\n".join([f"{args.task}, {args.episodes} held-out seeds, {args.bundle}", "",
                       "| sampler noise | success | Wilson 95% | object left of x=0 | right of it |",
                       "|---|---:|---|---:|---:|", *rows])
    (out / "results.md").write_text(table + "\n")
    print(table)
    plot(files, results, out / "positions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
