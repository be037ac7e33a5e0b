"""`vidact launch slurm` on a real Slurm cluster (scripts/slurm_local.sh: one machine, two Slurm
nodes): a job runs to completion, a 2-node job requeued mid-run resumes with no lost or repeated
optimizer steps, and (slow suite) SIGUSR1 makes the job checkpoint and requeue itself.

All jobs run the same recipe, overrides and task count, so an interrupted job must end bit-for-bit
where the uninterrupted one ended: same final weights, and the same loss at every step (a resumed
run that skipped or repeated a batch would log different losses from the resume point on).
Two tasks with DDP on CPU when this vidact has train.devices/num_nodes (distributed strategies),
else one task.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import subprocess
import time
from pathlib import Path

import pytest
import torch

from slurm_helpers import job_info, release_requeued, submit, wait_for
from vidact.config import RunConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("slurm_cluster")

RECIPE = "debug_sliding_square"
STEPS = 120
CHECKPOINT_EVERY = 10
MULTI_TASK = "devices" in {f.name for f in dataclasses.fields(TrainConfig)}
TASKS = 2 if MULTI_TASK else 1
OVERRIDES = [f"train.steps={STEPS}", "train.batch_size=4", "train.log_every=1",
             f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.warmup_steps=10"]
if "log" in {f.name for f in dataclasses.fields(RunConfig)}:  # no wandb files in test runs
    OVERRIDES.append("log.wandb=disabled")
JOB_TIMEOUT = 420  # seconds; a job takes ~20-35 s on an idle 2-core machine, jobs queue behind each other
DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def resources(nodes: int, tasks_per_node: int) -> list[str]:
    return ["--nodes", str(nodes), "--gpus-per-node", "0", "--tasks-per-node", str(tasks_per_node),
            "--cpus-per-task", "1", "--time", "10"]


class Jobs(dict):
    """name -> (job id, run root); ``submit(name, nodes)`` launches one more job like the others."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def submit(self, name: str, nodes: int = 1) -> tuple[str, Path]:
        """``TASKS`` tasks in all, on one node or spread over ``nodes``."""
        run_root = self.root / name
        self[name] = (submit([RECIPE, *resources(nodes, TASKS // nodes), "--run-root", str(run_root),
                              "--job-name", f"vidact-{name}", *OVERRIDES], cwd=self.root), run_root)
        return self[name]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, slurm_cluster):
    """The uninterrupted reference, submitted first. The jobs to interrupt are submitted by their
    tests, so that they do not run to the end before their test watches them."""
    out = Jobs(tmp_path_factory.mktemp("slurm"))
    out.submit("straight")
    yield out
    for job_id, _ in out.values():  # nothing left running after a failed test
        subprocess.run(["scancel", job_id], capture_output=True)


def _two_nodes_possible() -> str | None:
    """None when a 2-node job can run here, else why not."""
    if TASKS < 2:
        return "this vidact has no train.devices/num_nodes: one task only"
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()
    if len(set(nodes)) < 2:
        return f"the cluster has {len(set(nodes))} node(s); scripts/slurm_local.sh starts two"
    return None


def _handles_sigusr1() -> bool:
    return importlib.util.find_spec("vidact.lit.signals") is not None


def _run_dir(run_root: Path, job: str, job_id: str) -> Path:
    return run_root / f"vidact-{job}-{job_id}"


def _log(run_root: Path, job: str, job_id: str, restart: int) -> str:
    path = run_root / "slurm-logs" / f"vidact-{job}-{job_id}.restart{restart}.log"
    return path.read_text(errors="replace").replace("\r", "\n") if path.is_file() else ""


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "metrics.csv") as f:
        return [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]


def _final(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _wait_done(job_id: str) -> dict[str, str]:
    return wait_for(job_id, lambda i: i.get("JobState") in DONE, JOB_TIMEOUT, "completion")


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return [p for p in folder.glob("*.ckpt") if p.name not in ("last.ckpt", "best.ckpt")] if folder.is_dir() else []


def _wait_mid_run(job_id: str, run_dir: Path) -> None:
    """Until the job runs and has written a checkpoint, well before its last step."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        state = job_info(job_id).get("JobState")
        assert state not in DONE, f"job {job_id} ended ({state}) before it could be interrupted"
        if state == "RUNNING" and _checkpoints(run_dir):
            return
        time.sleep(0.1)
    pytest.fail(f"job {job_id} wrote no checkpoint in {JOB_TIMEOUT} s")


def _assert_same_run(straight: Path, resumed: Path) -> None:
    """No lost or repeated optimizer steps: every step logged once, same losses, same weights."""
    a, b = _losses(straight), _losses(resumed)
    assert [s for s, _ in b] == list(range(STEPS)), "steps must run 0..N-1, each once, across the restart"
    for (step, la), (_, lb) in zip(a, b):
        assert la == pytest.approx(lb, rel=1e-5, abs=1e-6), f"loss differs at step {step}"
    fa, fb = _final(straight), _final(resumed)
    assert fa["global_step"] == fb["global_step"] == STEPS
    for name, weight in fa["state_dict"].items():
        assert torch.allclose(weight, fb["state_dict"][name], atol=1e-6), name


def test_launched_job_runs_to_completion(jobs):
    job_id, run_root = jobs["straight"]
    info = _wait_done(job_id)
    log = _log(run_root, "straight", job_id, 0)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log[-3000:]
    assert info["NumTasks"] == str(TASKS) and info["Requeue"] == "1", info
    run_dir = _run_dir(run_root, "straight", job_id)
    assert [s for s, _ in _losses(run_dir)] == list(range(STEPS))
    assert _final(run_dir)["global_step"] == STEPS
    assert "starting from scratch" in log and log.count("vidact train: done") == TASKS  # every rank finished
    if TASKS > 1:
        assert "strategy ddp" in log and f"MEMBER: {TASKS}/{TASKS}" in log
    header = (run_root / "slurm-logs" / f"vidact-straight-{job_id}.out").read_text()
    assert f"job {job_id} restart 0" in header and f"world size {TASKS}" in header
    assert (run_root / "slurm-logs" / f"vidact-straight-{job_id}.sbatch").is_file()  # the script it ran


def test_requeued_job_resumes_without_lost_or_repeated_steps(jobs):
    """`scontrol requeue` kills the running job and queues it again under the same id: the same
    run directory, and train.resume=auto continues from the newest checkpoint.

    The job runs on 2 nodes x 1 task where the cluster has two nodes (scripts/slurm_local.sh
    starts two slurmd): ranks on different Slurm nodes, rendezvous on the first node's address,
    the world size of the 1-node x 2-task reference, so it must train exactly like it."""
    nodes = 2 if _two_nodes_possible() is None else 1
    job_id, run_root = jobs.submit("requeued", nodes=nodes)
    run_dir = _run_dir(run_root, "requeued", job_id)
    _wait_mid_run(job_id, run_dir)
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    release_requeued(job_id)
    info = _wait_done(job_id)
    first, second = _log(run_root, "requeued", job_id, 0), _log(run_root, "requeued", job_id, 1)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", second[-3000:] or first[-3000:]
    assert "vidact train: done" not in first, "the requeue must interrupt the run"
    assert "resuming from" in second and "starting from scratch" not in second, second[-3000:]
    header = (run_root / "slurm-logs" / f"vidact-requeued-{job_id}.out").read_text()
    assert f"job {job_id} restart 0" in header and f"job {job_id} restart 1" in header  # one log, both attempts
    assert f"{nodes} node(s) x {TASKS // nodes} task(s), world size {TASKS}" in header, header
    assert info["NumNodes"] == str(nodes)
    if TASKS > 1:
        assert f"MEMBER: {TASKS}/{TASKS}" in second

    straight_id, straight_root = jobs["straight"]
    _wait_done(straight_id)
    _assert_same_run(_run_dir(straight_root, "straight", straight_id), run_dir)


@pytest.mark.slow  # two more job starts (~1 min); the default suite covers preemption with scontrol requeue
@pytest.mark.skipif(not _handles_sigusr1(), reason="this vidact has no SIGUSR1 handling (vidact.lit.signals)")
def test_sigusr1_checkpoints_and_requeues_itself(jobs):
    """The time-limit warning (--signal=SIGUSR1@90) sent by hand: the tasks checkpoint at the next
    step, rank 0 requeues the job, and the next incarnation resumes."""
    job_id, run_root = jobs.submit("sigusr1")
    run_dir = _run_dir(run_root, "sigusr1", job_id)
    _wait_mid_run(job_id, run_dir)
    proc = subprocess.run(["scancel", "--signal=USR1", job_id], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    wait_for(job_id, lambda i: i.get("Restarts") == "1" or i.get("JobState") in DONE, JOB_TIMEOUT, "requeue")
    release_requeued(job_id)
    info = _wait_done(job_id)
    first, second = _log(run_root, "sigusr1", job_id, 0), _log(run_root, "sigusr1", job_id, 1)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", first[-3000:]
    assert "requeued SLURM job" in first and "vidact train: done" not in first, first[-3000:]
    assert "resuming from" in second, second[-3000:]

    straight_id, straight_root = jobs["straight"]
    _wait_done(straight_id)
    _assert_same_run(_run_dir(straight_root, "straight", straight_id), run_dir)
