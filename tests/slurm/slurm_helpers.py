"""Helpers for tests/slurm.

The cluster is the one that answers, or a local one-node cluster started by
scripts/slurm_local.sh (CI starts it before the suite; a test run starts it when missing). Tests
that need it are skipped, with the reason, only when no cluster can be started."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidact.config import REPO_ROOT

VIDACT = [sys.executable, "-m", "vidact.cli"]


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_cluster() -> str | None:
    """None when a cluster answers (started here if needed), else why not."""
    if _cluster_answers():
        return None
    script = REPO_ROOT / "scripts" / "slurm_local.sh"
    try:
        proc = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "no Slurm cluster: scripts/slurm_local.sh start did not finish in 10 minutes"
    except OSError as e:
        return f"no Slurm cluster: scripts/slurm_local.sh could not run ({e})"
    if proc.returncode != 0 or not _cluster_answers():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return f"no Slurm cluster: slurmctld could not be started ({' | '.join(tail)})"
    return None


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(job_id: str, done, timeout: float, what: str) -> dict[str, str]:
    """Poll ``scontrol show job`` until ``done(info)``; fails with the job's state on timeout."""
    deadline = time.monotonic() + timeout
    info: dict[str, str] = {}
    while time.monotonic() < deadline:
        info = job_info(job_id)
        if done(info):
            return info
        time.sleep(0.2)
    pytest.fail(f"job {job_id}: {what} not reached in {timeout:.0f} s; last state {info.get('JobState')} "
                f"(reason {info.get('Reason')})")


def release_requeued(job_id: str, timeout: float = 60) -> None:
    """Slurm holds a requeued job back for two minutes (BeginTime = now + 120 s); start it now."""
    wait_for(job_id, lambda i: i.get("JobState") in ("PENDING", "RUNNING", "COMPLETED"), timeout, "requeued")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)


def submit(args: list[str], cwd: Path) -> str:
    """``vidact launch slurm ARGS`` through the real CLI; returns the job id."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([*VIDACT, "launch", "slurm", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"submitted job (\d+)", proc.stdout)
    assert m, proc.stdout
    return m.group(1)
