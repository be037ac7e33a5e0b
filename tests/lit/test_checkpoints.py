"""Run-directory checkpoints and signals: atomic step files, keep-last + best, resume=auto past a
corrupt newest checkpoint, SIGTERM -> checkpoint -> exact resume, SIGUSR1 under SLURM -> requeue,
Ctrl-C (SIGINT to the process group, data workers included) -> checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vidact.config import REPO_ROOT, load
from vidact.checkpoint_files import CheckpointWarning, newest_checkpoint
from vidact.train import train

RECIPE = "debug_sliding_square"
TINY = ["train.batch_size=4", "train.log_every=1", "train.warmup_steps=10", "train.checkpoint_every=2"]


def _ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def test_keep_last_best_and_last_link(tmp_path):
    run_dir = tmp_path / "run"
    ctrl_c = signal.getsignal(signal.SIGINT)  # Python's own, or SIG_IGN when started in the background
    train(load(RECIPE, [*TINY, "train.steps=8", "train.keep_last=2", f"run_dir={run_dir}"]))
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # training's Ctrl-C handler is gone once it returns
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.glob("step-*.ckpt")) == ["step-00000006.ckpt", "step-00000008.ckpt"]
    assert (folder / "last.ckpt").is_symlink() and os.readlink(folder / "last.ckpt") == "step-00000008.ckpt"
    assert not list(folder.glob(".*.tmp"))
    best = json.loads((folder / "best.json").read_text())
    assert _ckpt(folder / "best.ckpt")["global_step"] == best["step"]
    assert _ckpt(folder / "best.ckpt")["vidact"]["loss_ema"] == pytest.approx(best["loss_ema"])
    # best is the lowest smoothed loss among the saves (steps 2, 4, 6, 8), not the newest by default.
    assert best["loss_ema"] <= _ckpt(folder / "step-00000008.ckpt")["vidact"]["loss_ema"]


def test_resume_auto_skips_a_truncated_newest_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = [*TINY, f"run_dir={run_dir}"]
    train(load(RECIPE, [*common, "train.steps=4"]))
    newest = run_dir / "checkpoints" / "step-00000004.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a write cut short
    (run_dir / "checkpoints" / ".step-00000006.ckpt.tmp").write_bytes(b"half a save")  # killed mid-save
    with pytest.warns(CheckpointWarning, match=str(newest)):
        assert newest_checkpoint(run_dir / "checkpoints").name == "step-00000002.ckpt"
    capsys.readouterr()
    with pytest.warns(CheckpointWarning, match="step-00000004.ckpt is unreadable"):
        train(load(RECIPE, [*common, "train.steps=6"]))
    assert "resuming from" in capsys.readouterr().out.split("step-00000002.ckpt")[0]
    final = _ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 6 and final["vidact"]["batches_consumed"] == 6
    assert not (run_dir / "checkpoints" / ".step-00000006.ckpt.tmp").exists()


def _launch(run_dir: Path, steps: int, env_extra: dict | None = None, overrides: tuple[str, ...] = (),
            new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "vidact.cli", "train", RECIPE, *TINY, f"train.steps={steps}",
                             f"run_dir={run_dir}", *overrides], cwd=run_dir.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=new_session)


def _signal_after_first_checkpoint(proc: subprocess.Popen, run_dir: Path, signum: int,
                                   group: bool = False) -> tuple[str, str]:
    """``group``: to the process group, as a terminal sends Ctrl-C."""
    first = run_dir / "checkpoints" / "step-00000002.ckpt"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    return proc.communicate(timeout=120)


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    n = 30
    killed = tmp_path / "killed"
    proc = _launch(killed, n)
    out, err = _signal_after_first_checkpoint(proc, killed, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:] + err[-2000:]
    assert "stopped by SIGTERM at step" in err and "rerun the same command to resume" in err
    k = _ckpt(killed / "checkpoints" / "last.ckpt")["global_step"]
    assert 2 <= k < n

    # Checkpoint spacing does not change the arithmetic; fewer saves keep the test fast.
    rare = [*TINY, f"train.steps={n}", "train.checkpoint_every=100"]
    train(load(RECIPE, [*rare, f"run_dir={killed}"]))  # resume=auto
    straight = tmp_path / "straight"
    train(load(RECIPE, [*rare, f"run_dir={straight}"]))
    a, b = _ckpt(straight / "checkpoints" / "last.ckpt"), _ckpt(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == n
    for name, weight in a["state_dict"].items():
        assert torch.allclose(weight, b["state_dict"][name], atol=1e-6), name
    for name, weight in a["ema_state_dict"].items():
        assert torch.allclose(weight, b["ema_state_dict"][name], atol=1e-6), f"ema {name}"


def test_sigusr1_under_slurm_checkpoints_and_requeues(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    fake = bin_dir / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    run_dir = tmp_path / "run"
    proc = _launch(run_dir, 60, {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    out, err = _signal_after_first_checkpoint(proc, run_dir, signal.SIGUSR1)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert "stopped by SIGUSR1" in err and "job requeued" in err
    assert calls.read_text().split() == ["requeue", "4242"]
    assert _ckpt(run_dir / "checkpoints" / "last.ckpt")["global_step"] < 60


def test_ctrl_c_checkpoints_with_data_workers(robot_dataset, tmp_path):
    """Ctrl-C reaches the trainer and its two data workers at once: the workers leave it to the
    trainer, which checkpoints at the next step boundary (Lightning alone exits without one)."""
    run_dir = tmp_path / "run"
    data = ["data.kind=lerobot", f"data.sources=[{{kind: lerobot, path: '{robot_dataset}'}}]", "data.num_workers=2",
            "model.channels=3", "model.state_dim=2", "model.action_dim=2", "model.history=1", "model.chunk_length=4"]
    proc = _launch(run_dir, 200, overrides=(*data, "train.checkpoint_every=2"), new_session=True)
    out, err = _signal_after_first_checkpoint(proc, run_dir, signal.SIGINT, group=True)
    assert proc.returncode == 128 + signal.SIGINT, out[-2000:] + err[-2000:]
    assert "stopped by SIGINT at step" in err and "rerun the same command to resume" in err
    step = _ckpt(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 2 <= step < 200 and f"stopped by SIGINT at step {step};" in err


def test_second_signal_kills_a_run_that_never_reaches_a_step_boundary():
    code = ("import os, signal, time\n"
            "from vidact.lit.signals import StopOnSignal\n"
            "stop = StopOnSignal(save=None)\n"
            "stop.on_train_start(None, None)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "assert stop.received == signal.SIGTERM\n"
            "print('first handled', flush=True)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(5)\n"
            "print('still alive', flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "first handled" in proc.stdout and "still alive" not in proc.stdout
    assert proc.returncode == -signal.SIGTERM
