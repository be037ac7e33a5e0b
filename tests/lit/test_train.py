"""The training entry point, end to end on CPU: the real CLI, exact resume, NaN handling."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidact.config import REPO_ROOT, ConfigError, load
from vidact.lit.module import NonFiniteLossError
from vidact.train import train

RECIPE = "debug_sliding_square"
# Small and fast; warmup longer than every run here so lr(step) does not depend on train.steps
# (the parity test changes train.steps between the interrupted and the resumed run).
TINY = ["train.batch_size=4", "train.log_every=1", "train.warmup_steps=10", "train.checkpoint_every=2"]


def test_cli_train_writes_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "vidact.cli", "train", RECIPE, "train.steps=6",
                           f"run_dir={run_dir}", *TINY], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "VidAct flavor=tiny" in proc.stdout and "tokens/sample" in proc.stdout
    assert load(run_dir / "config.yaml").train.steps == 6  # the resolved config reloads
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    assert set(ckpt["ema_state_dict"]) == {n for n, p in _trainable_names(ckpt)}


def _trainable_names(ckpt):
    # Every EMA entry is a model weight with the same shape.
    state = ckpt["state_dict"]
    return [(n, state[f"model.{n}"]) for n in ckpt["ema_state_dict"] if f"model.{n}" in state]


def _final(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def test_resume_matches_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    train(load(RECIPE, [*TINY, "train.steps=8", f"run_dir={straight}"]))

    resumed = tmp_path / "resumed"
    train(load(RECIPE, [*TINY, "train.steps=4", f"run_dir={resumed}"]))
    at_4 = _final(resumed)
    assert at_4["global_step"] == 4
    train(load(RECIPE, [*TINY, "train.steps=8", f"run_dir={resumed}"]))  # resume=auto picks up last.ckpt

    a, b = _final(straight), _final(resumed)
    assert a["global_step"] == b["global_step"] == 8
    for name, weight in a["state_dict"].items():
        assert torch.allclose(weight, b["state_dict"][name], atol=1e-6), name
    for name, weight in a["ema_state_dict"].items():
        assert torch.allclose(weight, b["ema_state_dict"][name], atol=1e-6), f"ema {name}"
    # Steps 5-8 really ran after the resume (equal weights are not just the step-4 weights).
    name = "model.action_out.weight"
    assert not torch.allclose(at_4["state_dict"][name], b["state_dict"][name], atol=1e-6)
    with open(resumed / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert steps == list(range(8)), "the resumed run's metrics must continue the first run's"


def test_nonfinite_loss_stops_naming_the_step(tmp_path, capsys):
    # lr=1e30: the first step is finite (zero-initialized heads), AdamW then moves every weight
    # by ~1e30 and every later loss overflows. Skipped steps leave the weights there, so the
    # bad steps are consecutive. (Lightning still counts a skipped step in global_step.)
    cfg = load(RECIPE, [*TINY, "train.steps=10", "train.lr=1e30", "train.warmup_steps=0",
                        "train.max_bad_steps=2", f"run_dir={tmp_path / 'nan'}"])
    with pytest.raises(NonFiniteLossError, match=r"at step 2 \(batch 2, .*2/2 consecutive bad steps: stopping"):
        train(cfg)
    out = capsys.readouterr().out
    assert "non-finite loss" in out and "at step 1 (batch 1, sources ['sliding_square']); 1/2" in out


def test_cli_reports_nonfinite_loss(tmp_path, capsys):
    from vidact.cli import main

    code = main(["train", RECIPE, *TINY, "train.steps=10", "train.lr=1e30", "train.warmup_steps=0",
                 "train.max_bad_steps=1", f"run_dir={tmp_path / 'nan'}"])
    assert code == 1
    assert "non-finite loss" in capsys.readouterr().err


def test_cli_resume_path_must_exist(tmp_path, capsys):
    from vidact.cli import main

    code = main(["train", RECIPE, f"run_dir={tmp_path}", f"train.resume={tmp_path / 'missing.ckpt'}"])
    assert code == 2 and "train.resume" in capsys.readouterr().err


def test_skipped_steps_leave_weights_and_schedule(tmp_path):
    # As above, but with room for the bad steps: the run ends, and its checkpoint shows that the
    # three skipped steps moved neither the weights nor the learning-rate schedule.
    bad = ["train.lr=1e30", "train.warmup_steps=0", "train.max_bad_steps=5"]
    train(load(RECIPE, [*TINY, *bad, "train.steps=4", f"run_dir={tmp_path / 'four'}"]))
    train(load(RECIPE, [*TINY, *bad, "train.steps=1", f"run_dir={tmp_path / 'one'}"]))
    four, one = _final(tmp_path / "four"), _final(tmp_path / "one")
    assert four["global_step"] == 4 and four["vidact"]["skipped_steps"] == 3
    assert four["lr_schedulers"][0]["last_epoch"] == one["lr_schedulers"][0]["last_epoch"] == 1
    for name, weight in one["state_dict"].items():
        assert torch.equal(weight, four["state_dict"][name]), name


def test_metrics_have_one_row_per_step_after_resuming_an_older_checkpoint(tmp_path):
    # An interrupted run that logged past its last checkpoint: resuming re-logs those steps, and
    # the old rows for them are dropped rather than duplicated.
    run_dir = tmp_path / "run"
    common = [*TINY, f"run_dir={run_dir}"]
    train(load(RECIPE, [*common, "train.steps=2"]))
    at_2 = tmp_path / "at_2.ckpt"
    at_2.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    train(load(RECIPE, [*common, "train.steps=4"]))
    train(load(RECIPE, [*common, "train.steps=4", f"train.resume={at_2}"]))
    with open(run_dir / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert steps == [0, 1, 2, 3]


def test_max_minutes_stops_with_a_final_checkpoint_and_resumes_the_budget(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load(RECIPE, [*TINY, "train.steps=100000", "train.max_minutes=0.05", f"run_dir={run_dir}"])
    train(cfg)  # 3 s of training, then a normal end
    first = _final(run_dir)
    assert 0 < first["global_step"] < 100000
    assert (run_dir / "checkpoints" / f"step-{first['global_step']:08d}.ckpt").exists()
    # The elapsed time travels in the checkpoint: resuming with the same budget trains ~nothing more.
    train(load(RECIPE, [*TINY, "train.steps=100000", "train.max_minutes=0.05", f"run_dir={run_dir}"]))
    assert _final(run_dir)["global_step"] - first["global_step"] <= 2


def test_max_minutes_must_be_positive():
    with pytest.raises(ConfigError, match="train.max_minutes must be > 0"):
        load(RECIPE, ["train.max_minutes=0"])
