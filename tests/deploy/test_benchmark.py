"""`vidact eval --benchmark/--tasks`: every task of a list, in worker processes, with a benchmark table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidact.cli import main
from vidact.deploy.benchmark import write_benchmark_summary
from vidact.deploy.sim import EVAL_SEED_BASE, wilson_interval

TRAINED = "button-press-topdown-v3"  # the metaworld_bundle fixture's one task
UNSEEN = "reach-v3"


def test_benchmark_eval_runs_each_task_in_two_workers(metaworld_bundle, tmp_path, capsys):
    """Two tasks (one the bundle never saw), two episodes each, two workers: each task's
    results.json is a one-task evaluation on the held-out seeds, and benchmark.json/.md are
    those results, with one video per outcome."""
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    out = tmp_path / "bench"
    assert main(["eval", str(metaworld_bundle), "--tasks", TRAINED, UNSEEN, "--episodes", "2", "--max-steps", "5",
                 "--workers", "2", "--out", str(out)]) == 0
    bench = json.loads((out / "benchmark.json").read_text())
    assert bench["benchmark"] == "custom" and [r["task"] for r in bench["per_task"]] == [TRAINED, UNSEEN]
    assert bench["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1] and bench["max_steps"] == 5
    for row in bench["per_task"]:
        results = json.loads((out / row["task"] / "results.json").read_text())
        assert results["instruction"] == TASK_DESCRIPTIONS[row["task"]] == row["instruction"]
        assert results["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1] and results["max_steps"] == 5
        assert (row["successes"], row["episodes"], row["wilson95"]) == \
            (results["successes"], 2, results["wilson95"])
        recorded = [e for e in results["per_episode"] if "video" in e]
        # each episode records where its goal was and where the object ended, for failure analysis
        goals = [tuple(e["goal"]) for e in results["per_episode"]]
        assert all(len(g) == 3 and all(abs(v) < 2 for v in g) for g in goals) and len(set(goals)) == 2
        assert all(len(e["object_end"]) == 3 for e in results["per_episode"])
        assert sorted(e["success"] for e in recorded) == sorted({e["success"] for e in results["per_episode"]})
        for outcome, success in (("success", True), ("failure", False)):
            video = next((e["video"] for e in recorded if e["success"] == success), None)
            assert row["videos"][outcome] == (video and str(Path(video).relative_to(out)))
            assert video is None or Path(video).stat().st_size > 0
    successes = sum(r["successes"] for r in bench["per_task"])
    assert bench["episodes"] == 4 and bench["successes"] == successes
    assert bench["average_success_rate"] == pytest.approx(sum(r["success_rate"] for r in bench["per_task"]) / 2)
    assert bench["wilson95"] == pytest.approx(wilson_interval(successes, 4))
    table = (out / "benchmark.md").read_text()
    assert f"| {UNSEEN} | {bench['per_task'][1]['successes']}/2 |" in table
    assert f"| **average** | {successes}/4 |" in table
    printed = capsys.readouterr().out
    assert "[2/2 tasks" in printed and "vidact eval: custom: average success" in printed


def test_benchmark_summary_table_and_average(tmp_path):
    """Average of the per-task rates, Wilson interval of the pooled episodes, first video per outcome."""
    def results(task: str, outcomes: list[bool]) -> dict:
        episodes = [{"seed": i, "success": s, "length": 3, "video": str(tmp_path / task / f"episode_{i:03d}.mp4")}
                    for i, s in enumerate(outcomes)]
        n = sum(outcomes)
        return {"task": task, "instruction": f"do {task}", "successes": n, "episodes": len(outcomes),
                "success_rate": n / len(outcomes), "wilson95": list(wilson_interval(n, len(outcomes))),
                "mean_episode_length": 3.0, "per_episode": episodes}

    summary = write_benchmark_summary(tmp_path, "MT2", {"a-v3": results("a-v3", [True, False, True, True]),
                                                        "b-v3": results("b-v3", [False] * 4)})
    assert summary["average_success_rate"] == pytest.approx(0.375)
    assert summary["wilson95"] == pytest.approx(wilson_interval(3, 8))
    a, b = summary["per_task"]
    assert a["videos"] == {"success": "a-v3/episode_000.mp4", "failure": "a-v3/episode_001.mp4"}
    assert b["videos"] == {"success": None, "failure": "b-v3/episode_000.mp4"}
    assert json.loads((tmp_path / "benchmark.json").read_text()) == summary
    lines = (tmp_path / "benchmark.md").read_text().splitlines()
    low, high = wilson_interval(3, 4)
    assert f"| a-v3 | 3/4 | 0.75 | [{low:.2f}, {high:.2f}] | [success](a-v3/episode_000.mp4) " \
           "[failure](a-v3/episode_001.mp4) |" in lines
    assert lines[-1].startswith("| **average** | 3/8 | 0.38 |")


@pytest.mark.parametrize("args,message", [
    (["--benchmark", "MT11"], "--benchmark: unknown MetaWorld benchmark 'MT11'; known: MT10, MT25, MT50"),
    (["--benchmark", "MT10", "--tasks", UNSEEN], "give --tasks or --benchmark, not both"),
    (["--task", UNSEEN, "--benchmark", "MT10"], "give --task (one task) or --tasks/--benchmark (a task list)"),
    ([], "give --task, --tasks or --benchmark"),
    (["--tasks", "no-such-task-v3"], "unknown MetaWorld task(s) ['no-such-task-v3']"),
    (["--benchmark", "MT10", "--workers", "0"], "--workers must be >= 1, got 0"),
])
def test_benchmark_eval_input_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["eval", str(tmp_path / "no_bundle"), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidact eval: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
