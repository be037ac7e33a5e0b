"""Where in the workspace a policy fails: success against the object's start position.

Reads ``vidact eval`` results (``results.json``, one per task) and splits each task's episodes by
the start position of the task's object (MetaWorld's first object: the button, the drawer handle,
the puck). Episodes recorded before ``vidact eval`` kept ``object_start`` get it back from the
simulator (the seed's reset, the generator's renderer). A table per results file, and with
``--plot`` a scatter of start positions (x, y), successes filled (drawn with PIL):

    .venv/bin/python bench/bench_positions.py outputs/af/bench2400/seed*/*/eval/button-press-topdown-v3/results.json \
        --bins -0.1 -0.05 0 0.05 0.1 --plot outputs/af/positions.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidact.deploy.sim import wilson_interval  # noqa: E402


def object_starts(results: dict) -> np.ndarray:
    """[episodes, 3] start positions of the task's object, from the records or the simulator."""
    episodes = results["per_episode"]
    if all("object_start" in e for e in episodes):
        return np.array([e["object_start"] for e in episodes], dtype=np.float64)
    from vidact.data.metaworld import ExpertRollout

    rollout = ExpertRollout(results["task"], ["corner2"], 32, 32, results.get("rendering") or "vidact")
    try:
        return np.array([rollout.reset(int(e["seed"]))[4:7] for e in episodes], dtype=np.float64)
    finally:
        rollout.close()


def split(results: dict, bins: list[float], axis: int) -> list[dict]:
    """Successes per bin of the object's start coordinate ``axis``."""
    starts = object_starts(results)
    success = np.array([bool(e["success"]) for e in results["per_episode"]])
    edges = [-np.inf, *bins, np.inf]
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (starts[:, axis] >= low) & (starts[:, axis] < high)
        if inside.any():
            k, n = int(success[inside].sum()), int(inside.sum())
            rows.append({"low": low, "high": high, "successes": k, "episodes": n, "wilson95": wilson_interval(k, n)})
    return rows


def plot(files: list[Path], all_results: list[dict], out: Path, size: int = 240) -> None:
    """One panel per results file: start positions (x right, y up), successes filled green,
    failures red rings; drawn with PIL."""
    from PIL import Image, ImageDraw

    starts = [object_starts(r) for r in all_results]
    xy = np.concatenate(starts)[:, :2]
    low, high = xy.min(0) - 0.01, xy.max(0) + 0.01
    pad, head = 12, 28
    img = Image.new("RGB", (len(files) * (size + pad) + pad, size + head + pad), "white")
    draw = ImageDraw.Draw(img)
    for i, (path, results, start) in enumerate(zip(files, all_results, starts)):
        x0 = pad + i * (size + pad)
        success = [bool(e["success"]) for e in results["per_episode"]]
        draw.text((x0, 2), f"{path.parents[3].name}/{path.parents[2].name}", fill="black")
        draw.text((x0, 14), f"{results['task']}: {sum(success)}/{len(success)}", fill="black")
        draw.rectangle([x0, head, x0 + size, head + size], outline="gray")
        if low[0] < 0 < high[0]:  # x = 0
            u = x0 + (0 - low[0]) / (high[0] - low[0]) * size
            draw.line([u, head, u, head + size], fill="lightgray")
        for (x, y), ok in zip(start[:, :2], success):
            u = x0 + (x - low[0]) / (high[0] - low[0]) * size
            v = head + size - (y - low[1]) / (high[1] - low[1]) * size
            box = [u - 4, v - 4, u + 4, v + 4]
            draw.ellipse(box, fill="green") if ok else draw.ellipse(box, outline="red", width=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    print(f"plot: {out} (x from {low[0]:.3f} to {high[0]:.3f} m, y from {low[1]:.3f} to {high[1]:.3f} m)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results.json files of vidact eval")
    p.add_argument("--bins", nargs="+", type=float, default=[0.0], help="bin edges of the start coordinate")
    p.add_argument("--axis", type=int, default=0, choices=(0, 1, 2), help="0: x (left-right), 1: y, 2: z")
    p.add_argument("--plot", type=Path, help="write a scatter of start positions, successes filled")
    args = p.parse_args()
    missing = [str(f) for f in args.results if not f.is_file()]
    if missing:
        sys.exit(f"results not found: {', '.join(missing)}")
    all_results = [json.loads(f.read_text()) for f in args.results]
    axis = "xyz"[args.axis]
    print(f"| results | task | " + " | ".join(f"{axis} in bin {i}" for i in range(len(args.bins) + 1)) + " |")
    for path, results in zip(args.results, all_results):
        cells = [f"[{r['low']:+.3g}, {r['high']:+.3g}): {r['successes']}/{r['episodes']}" for r in split(
            results, args.bins, args.axis)]
        print(f"| {path.parent} | {results['task']} | " + " | ".join(cells) + " |")
    if args.plot:
        plot(args.results, all_results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
