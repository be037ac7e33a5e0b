"""The rendered sbatch script and the launcher's refusals, without a cluster.

A 2-node x 4-GPU script is executed by bash with the environment sbatch would give it and stand-in
``srun`` / ``scontrol`` commands: the stand-in srun starts the task command's *config and cluster
view* for each of the 8 tasks (the environment a real srun sets: SLURM_PROCID, SLURM_LOCALID,
SLURM_NODEID, ...), so the test sees what Lightning's SLURMEnvironment and vidact.config.load
would see in every rank: ranks, world size, rendezvous address and port, devices x nodes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vidact.config import TrainConfig
from vidact.launch import LaunchError, SlurmResources, main, render, time_seconds

RECIPE = "debug_sliding_square"
HAS_DEVICES = "devices" in {f.name for f in dataclasses.fields(TrainConfig)}
needs_devices = pytest.mark.skipif(not HAS_DEVICES, reason="this vidact has no train.devices/num_nodes")

FAKE_SCONTROL = """#!/bin/bash
# scontrol show hostnames gpu-[07-08] | scontrol show node gpu-07
case "$1 $2 $3" in
    "show hostnames gpu-[07-08]") printf 'gpu-07\\ngpu-08\\n' ;;
    "show node gpu-07") echo "NodeName=gpu-07 Arch=x86_64 CoresPerSocket=32"; echo "   NodeAddr=10.1.0.7 NodeHostName=gpu-07" ;;
    *) exit 1 ;;
esac
"""

FAKE_SRUN = """#!{python}
# Stand-in srun: for each task of the allocation, the view of that task's command.
import json, os, sys
from lightning.pytorch.plugins.environments import SLURMEnvironment
from vidact.config import load

args = sys.argv[1:]
options = [a for a in args[:next(i for i, a in enumerate(args) if not a.startswith("-"))]]
command = args[len(options):]
nodes, per_node = int(os.environ["SLURM_JOB_NUM_NODES"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
hosts = ["gpu-07", "gpu-08"]
base = dict(os.environ)
with open(os.environ["PROBE_OUT"], "a") as out:
    for node in range(nodes):
        for local in range(per_node):
            os.environ.clear()
            os.environ.update(base, SLURM_NTASKS=str(nodes * per_node), SLURM_PROCID=str(node * per_node + local),
                              SLURM_LOCALID=str(local), SLURM_NODEID=str(node), SLURMD_NODENAME=hosts[node],
                              SLURM_NODELIST=base["SLURM_JOB_NODELIST"])
            env = SLURMEnvironment()
            recipe, overrides = command[4], command[5:]
            cfg = load(recipe, overrides)
            # Lightning's own rule, without the script's exports, for comparison.
            port_rule = 15000 + int(base["SLURM_JOB_ID"][-4:])
            out.write(json.dumps(dict(
                options=options, command=command[:4], world_size=env.world_size(), global_rank=env.global_rank(),
                local_rank=env.local_rank(), node_rank=env.node_rank(), main_address=env.main_address,
                main_port=env.main_port, lightning_address=env.resolve_root_node_address(base["SLURM_JOB_NODELIST"]),
                lightning_port=port_rule, devices=cfg.train.devices, num_nodes=cfg.train.num_nodes,
                strategy=cfg.train.strategy, run_dir=cfg.run_dir, steps=cfg.train.steps,
                omp=os.environ.get("OMP_NUM_THREADS"), nccl=os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING"),
                detect=SLURMEnvironment.detect())) + "\\n")
"""


def _directives(script: str) -> dict[str, str]:
    """#SBATCH directives, as sbatch reads them: only the comment block before the first command."""
    out = {}
    for line in script.splitlines()[1:]:
        if not line.startswith("#"):
            break
        if m := re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line):
            out[m.group(1)] = m.group(2) or ""
    return out


def _execute(script: str, tmp_path: Path, job_id: str = "123456", restart: str | None = None) -> list[dict]:
    """Run the script as sbatch would on a 2-node allocation; the task views, rank order."""
    d = _directives(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(FAKE_SRUN.format(python=sys.executable))
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    probe = tmp_path / "probe.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PROBE_OUT": str(probe),
           "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": d["job-name"], "SLURM_JOB_NODELIST": "gpu-[07-08]",
           "SLURM_JOB_NUM_NODES": d["nodes"], "SLURM_NTASKS_PER_NODE": d["ntasks-per-node"],
           "SLURM_NTASKS": str(int(d["nodes"]) * int(d["ntasks-per-node"])), "SLURM_CPUS_PER_TASK": d["cpus-per-task"]}
    env.pop("MASTER_ADDR", None), env.pop("MASTER_PORT", None)
    if restart is not None:
        env["SLURM_RESTART_COUNT"] = restart
    proc = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted((json.loads(line) for line in probe.read_text().splitlines()), key=lambda v: v["global_rank"])


@needs_devices
def test_two_node_script_gives_every_rank_a_consistent_view(tmp_path):
    resources = SlurmResources(nodes=2, gpus_per_node=4, cpus_per_task=8, time="2-00:00:00", partition="gpu",
                               account="robots")
    rendered = render(RECIPE, resources, ["train.steps=50"], run_root=tmp_path / "runs")
    d = _directives(rendered.script)
    assert d["nodes"] == "2" and d["ntasks-per-node"] == "4" and d["gpus-per-node"] == "4"
    assert d["cpus-per-task"] == "8" and d["time"] == "2-00:00:00"
    assert d["partition"] == "gpu" and d["account"] == "robots"
    assert "requeue" in d and d["signal"] == "SIGUSR1@90" and d["open-mode"] == "append"
    assert d["output"] == f"{tmp_path / 'runs' / 'slurm-logs'}/%x-%j.out"

    views = _execute(rendered.script, tmp_path, restart="2")
    assert [v["global_rank"] for v in views] == list(range(8))
    assert [v["local_rank"] for v in views] == [0, 1, 2, 3] * 2
    assert [v["node_rank"] for v in views] == [0] * 4 + [1] * 4
    for v in views:
        assert v["detect"] and v["world_size"] == 8 == v["devices"] * v["num_nodes"]
        assert (v["devices"], v["num_nodes"], v["strategy"]) == (4, 2, "ddp")
        assert v["lightning_address"] == "gpu-07"  # the first node, by name
        assert v["main_address"] == "10.1.0.7"  # ... at the address Slurm reaches it by (its NodeAddr)
        assert v["main_port"] == v["lightning_port"] == 15000 + 3456
        assert v["run_dir"] == f"{tmp_path / 'runs'}/debug_sliding_square-123456" and v["steps"] == 50
        assert v["omp"] == "8" and v["nccl"] == "1"
        assert v["command"][1:] == ["-m", "vidact.cli", "train"]
        # Task logs per job and restart, each line labelled with its rank.
        assert "--label" in v["options"] and "--kill-on-bad-exit=1" in v["options"]
        assert f"--output={tmp_path / 'runs' / 'slurm-logs'}/debug_sliding_square-123456.restart2.log" in v["options"]


@needs_devices
def test_recipe_strategy_is_kept_and_user_run_dir_wins(tmp_path):
    recipe = tmp_path / "zero3.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        include: [{Path(__file__).resolve().parents[2] / 'recipes' / 'debug_sliding_square.yaml'}]
        name: zero3
        train: {{strategy: deepspeed_zero3}}
        """))
    rendered = render(str(recipe), SlurmResources(nodes=4, gpus_per_node=8), [f"run_dir={tmp_path / 'mine'}"])
    assert "train.strategy=ddp" not in rendered.overrides and "train.devices=8" in rendered.overrides
    assert f'run_dir="{tmp_path / "mine"}"' in rendered.script and "${SLURM_JOB_ID}" not in rendered.run_dir
    single = render(RECIPE, SlurmResources(nodes=1, gpus_per_node=1), [])
    assert not any(o.startswith("train.strategy") for o in single.overrides)  # one task: the recipe decides


def test_one_task_cpu_script_renders_and_dry_run_prints_it(capsys):
    assert main(["slurm", RECIPE, "--nodes", "1", "--gpus-per-node", "0", "--time", "30", "--dry-run",
                 "train.steps=7"]) == 0
    script = capsys.readouterr().out
    d = _directives(script)
    assert d["nodes"] == "1" and d["ntasks-per-node"] == "1" and "gpus-per-node" not in d
    assert d["time"] == "30" and d["signal"] == "SIGUSR1@90" and "train.steps=7" in script
    assert main(["slurm", RECIPE, "--nodes", "1", "--gpus-per-node", "0", "--warning-seconds", "300", "--dry-run"]) == 0
    assert _directives(capsys.readouterr().out)["signal"] == "SIGUSR1@300"
    assert re.search(r"^srun .*\\\n\s+\S+python\S* -m vidact\.cli train \S+debug_sliding_square\.yaml", script, re.M)


@pytest.mark.parametrize("args, message", [
    (["--nodes", "0", "--gpus-per-node", "1"], "--nodes must be >= 1"),
    (["--nodes", "1", "--gpus-per-node", "16"], "--allow-many-gpus-per-node"),
    (["--nodes", "1", "--gpus-per-node", "-1"], "--gpus-per-node must be >= 0"),
    (["--nodes", "1", "--gpus-per-node", "2", "--tasks-per-node", "3"], "one task per GPU"),
    (["--nodes", "1", "--gpus-per-node", "1", "--time", "2h"], "is not a Slurm time"),
    (["--nodes", "1", "--gpus-per-node", "1", "--time", "1:30"], "preemption warning"),
    (["--nodes", "1", "--gpus-per-node", "1", "--time", "5", "--warning-seconds", "300"], "preemption warning"),
    (["--nodes", "1", "--gpus-per-node", "1", "--partition", "gpu;rm -rf"], "not a Slurm name"),
    (["--nodes", "1", "--gpus-per-node", "1", "--job-name", "bash"], "not usable"),
    (["--nodes", "1", "--gpus-per-node", "1", "train.devices=2"], "decided by the resources"),
    (["--nodes", "1", "--gpus-per-node", "1", "--run-root", "runs/my $HOME"], "unsafe in a batch script"),
])
def test_impossible_requests_are_refused(args, message, capsys):
    assert main(["slurm", RECIPE, *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_recipe_is_validated_before_submitting():
    env = {**os.environ, "PATH": "/nonexistent"}  # no sbatch: the recipe must fail first
    cmd = [sys.executable, "-m", "vidact.cli", "launch", "slurm", RECIPE, "--nodes", "1", "--gpus-per-node", "0",
           "model.flavr=S"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "did you mean 'model.flavor'" in proc.stderr, proc.stderr
    proc = subprocess.run([*cmd[:5], "no_such_recipe", *cmd[6:10]], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "recipe 'no_such_recipe' not found" in proc.stderr, proc.stderr


def test_multi_task_request_without_distributed_keys_is_refused(monkeypatch):
    import vidact.launch as launch

    monkeypatch.setattr(launch, "_train_fields", lambda: {"steps": None})  # a vidact before train.devices
    with pytest.raises(LaunchError, match="independent single-device runs"):
        render(RECIPE, SlurmResources(nodes=2, gpus_per_node=1), [])
    assert render(RECIPE, SlurmResources(nodes=1, gpus_per_node=1), []).overrides == []


@pytest.mark.parametrize("text, seconds", [("30", 1800), ("5:00", 300), ("1:00:00", 3600), ("2-0", 172800),
                                           ("1-12:30", 131400), ("0-00:02:01", 121)])
def test_slurm_time_formats(text, seconds):
    assert time_seconds(text) == seconds
