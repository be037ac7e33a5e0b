"""``vidact report RUN_DIR EVAL_DIR... --out DIR``: one page a person reads after a run: success
rate per task with its interval, the training curves as a picture, and links to the rollout
videos. Drawn with PIL so it needs nothing beyond the core dependencies."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

IMAGINE_METRICS = "metrics.json"  # vidact.worldmodel.imagine's output (no Lightning import here)
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.csv`` (Lightning CSV logger) -> {column: [(step, value), ...]} for train/ columns."""
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a vidact run directory (no config.yaml)")
    path = run_dir / "metrics.csv"
    if not path.is_file():  # a run shorter than train.log_every has logged nothing yet
        return {}
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                if key.startswith("train/") and value not in (None, ""):
                    series.setdefault(key, []).append((int(float(step)), float(value)))
    return series


def plot_curves(series: dict[str, list[tuple[int, float]]], out: Path, width: int = 720, height: int = 360) -> Path:
    """Log-scale loss curves, one colour per series, with a legend."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 20, 20, height - 40
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    points = [(s, v) for values in series.values() for s, v in values if v > 0]
    if points:
        s0, s1 = min(p[0] for p in points), max(max(p[0] for p in points), min(p[0] for p in points) + 1)
        lo, hi = math.log10(min(p[1] for p in points)), math.log10(max(p[1] for p in points))
        hi = hi if hi > lo else lo + 1
        sx = lambda s: left + (s - s0) / (s1 - s0) * (right - left)  # noqa: E731
        sy = lambda v: bottom - (math.log10(v) - lo) / (hi - lo) * (bottom - top)  # noqa: E731
        for i, (name, values) in enumerate(sorted(series.items())):
            xy = [(sx(s), sy(v)) for s, v in values if v > 0]
            color = COLORS[i % len(COLORS)]
            if len(xy) > 1:
                draw.line(xy, fill=color, width=2)
            draw.text((left + 10, top + 8 + 14 * i), name, fill=color)
        draw.text((left, bottom + 8), f"step {s0}", fill=(0, 0, 0))
        draw.text((right - 80, bottom + 8), f"step {s1}", fill=(0, 0, 0))
        draw.text((4, top), f"{10 ** hi:.3g}", fill=(0, 0, 0))
        draw.text((4, bottom - 10), f"{10 ** lo:.3g}", fill=(0, 0, 0))
    img.save(out)
    return out


def _link(path: Path, out: Path) -> str:
    """``path`` relative to the report's folder (so the folder can be moved or committed), else absolute."""
    try:
        return os.path.relpath(path.resolve(), out.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def write_report(run_dir: str | Path, eval_dirs: list[str | Path], out: str | Path) -> Path:
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(run_dir)
    curves = plot_curves(metrics, out / "training_curves.png")
    lines = [f"# vidact report: {run_dir.name}", "", "| task | success | Wilson 95% CI | mean length | mode |",
             "|---|---:|---|---:|---|"]
    videos, imagined = [], []
    for d in map(Path, eval_dirs):
        if (d / IMAGINE_METRICS).is_file() and not (d / "results.json").is_file():
            imagined.append(d)  # written by `vidact imagine`
            continue
        results = json.loads((d / "results.json").read_text())
        low, high = results["wilson95"]
        lines.append(f"| {results['task']} | {results['successes']}/{results['episodes']} "
                     f"({100 * results['success_rate']:.0f}%) | [{100 * low:.0f}%, {100 * high:.0f}%] | "
                     f"{results['mean_episode_length']:.0f} | {results['mode']} |")
        videos += [(results["task"], e["video"]) for e in results["per_episode"] if e.get("video")]
    lines += ["", f"![training curves]({curves.name})" if metrics else
              "No training metrics logged (the run was shorter than train.log_every).", "", "## Rollout videos", ""]
    lines += [f"- {task}: [{Path(v).name}]({_link(Path(v), out)})" for task, v in videos[:20]]
    for d in imagined:
        lines += imagined_section(d, out)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def imagined_section(folder: Path, out: Path) -> list[str]:
    """A ``vidact imagine`` folder: error per step ahead (mean over episodes) beside copying the
    last observed frame, the filmstrip and the side-by-side videos."""
    report = json.loads((folder / IMAGINE_METRICS).read_text())
    by_ahead: dict[int, list[dict]] = {}
    for episode in report["episodes"]:
        for step in episode["steps"]:
            by_ahead.setdefault(step["ahead"], []).append(step)
    lines = ["", f"## Imagined futures ({report['actions']} actions, {len(report['episodes'])} episodes)", "",
             "| steps ahead | MSE | copy-last MSE | PSNR dB | copy-last PSNR dB | SSIM | copy-last SSIM |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for ahead, steps in sorted(by_ahead.items()):
        mean = {k: sum(s[k] for s in steps) / len(steps) for k in ("model_mse", "copy_last_mse", "model_psnr",
                                                                     "copy_last_psnr", "model_ssim", "copy_last_ssim")}
        lines.append(f"| {ahead} | {mean['model_mse']:.4f} | {mean['copy_last_mse']:.4f} | {mean['model_psnr']:.1f} | "
                     f"{mean['copy_last_psnr']:.1f} | {mean['model_ssim']:.3f} | {mean['copy_last_ssim']:.3f} |")
    if (folder / "filmstrip.png").is_file():
        lines += ["", f"![imagined vs real]({_link(folder / 'filmstrip.png', out)})",
                  "", "Rows per episode: real, imagined; columns: the start frame, then each frame step."]
    lines += [""] + [f"- episode {e['episode']}: [{e['video']}]({_link(folder / e['video'], out)})"
                     for e in report["episodes"][:20]]
    return lines
