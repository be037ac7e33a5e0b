"""``vidact launch slurm RECIPE --nodes N --gpus-per-node G [...] [key=value ...]``.

Renders ``slurm/train.sbatch`` for a recipe and a set of resources, validates both, and submits
the script with ``sbatch`` (``--dry-run`` prints it instead). The launcher carries no
hyperparameters: the recipe decides training, the resources decide only the overrides that must
match them (``train.devices`` = tasks per node, ``train.num_nodes``, ``train.strategy=ddp`` when
there is more than one task and the recipe chose no strategy). Those keys are added only where
:class:`vidact.config.TrainConfig` has them; a multi-task request without them is refused rather
than started as N independent copies of a one-device run.

Each job trains in ``<run-root>/<name>-<SLURM_JOB_ID>`` (stable across requeues, so
``train.resume=auto`` resumes), unless the overrides name a ``run_dir``. Logs:
``<run-root>/slurm-logs/<job>-<id>.out`` for the batch script (appended across restarts) and
``<job>-<id>.restart<N>.log`` for the tasks of restart N, each line prefixed by its rank.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# vidact.config (torch, omegaconf) is imported inside the functions that need it: the CLI builds
# this command's arguments at start-up and `vidact --help` must stay instant.
TEMPLATE = Path(__file__).resolve().parent.parent / "slurm" / "train.sbatch"
# Default seconds between Slurm's SIGUSR1 and the time limit: time to finish the step, write a
# checkpoint and requeue (--warning-seconds; raise it for models whose checkpoint takes longer).
SIGNAL_SECONDS = 90
MAX_GPUS_PER_NODE = 8  # the largest common node; more is usually a typo (--allow-many-gpus-per-node)
# Keys the resources decide; a recipe or override may not set them to something else.
RESOURCE_KEYS = ("train.devices", "train.num_nodes")
# Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# Paths go into #SBATCH lines and double-quoted shell strings: no blanks, quotes, $, ` or \.
_UNSAFE_PATH = re.compile(r"[\s\"'$`\\]")


class LaunchError(ValueError):
    """An impossible or inconsistent launch request (printed as a message, exit status 2)."""


def time_seconds(text: str) -> int:
    """Slurm ``--time`` text -> seconds; raises :class:`LaunchError` on anything Slurm would reject."""
    m = _TIME.match(text.strip())
    if not m:
        raise LaunchError(f"--time {text!r} is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                          f"D-HH:MM:SS)")
    d, dh, dm, ds, m1, m2, m3 = (int(g) if g else None for g in m.groups())
    if d is not None:  # D-H[:M[:S]]
        return ((d * 24 + dh) * 60 + (dm or 0)) * 60 + (ds or 0)
    if m3 is not None:  # H:M:S
        return (m1 * 60 + m2) * 60 + m3
    if m2 is not None:  # M:S
        return m1 * 60 + m2
    return m1 * 60  # M


@dataclass(frozen=True)
class SlurmResources:
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # default: one per GPU, or 1 without GPUs
    cpus_per_task: int = 4
    time: str = "1-00:00:00"
    partition: str | None = None
    account: str | None = None
    allow_many_gpus_per_node: bool = False
    warning_seconds: int = SIGNAL_SECONDS  # SIGUSR1 this long before the time limit

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise LaunchError(f"--nodes must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise LaunchError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if self.gpus_per_node > MAX_GPUS_PER_NODE and not self.allow_many_gpus_per_node:
            raise LaunchError(f"--gpus-per-node {self.gpus_per_node}: nodes rarely hold more than "
                              f"{MAX_GPUS_PER_NODE} GPUs; pass --allow-many-gpus-per-node if yours do")
        if self.tasks_per_node is not None:
            if self.tasks_per_node < 1:
                raise LaunchError(f"--tasks-per-node must be >= 1, got {self.tasks_per_node}")
            if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
                raise LaunchError(f"--tasks-per-node {self.tasks_per_node} with --gpus-per-node "
                                  f"{self.gpus_per_node}: vidact runs one task per GPU (leave --tasks-per-node out)")
        if self.cpus_per_task < 1:
            raise LaunchError(f"--cpus-per-task must be >= 1, got {self.cpus_per_task}")
        if not 0 < self.warning_seconds <= 65535:  # Slurm's limit for --signal=...@time
            raise LaunchError(f"--warning-seconds must be in 1..65535, got {self.warning_seconds}")
        if time_seconds(self.time) <= self.warning_seconds:
            raise LaunchError(f"--time {self.time} is not longer than the {self.warning_seconds} s preemption "
                              f"warning (SIGUSR1 would arrive before training starts)")
        for flag, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not _SLURM_NAME.match(value):
                raise LaunchError(f"{flag} {value!r} is not a Slurm name (letters, digits, '_', '.', '-')")

    @property
    def tasks(self) -> int:
        """Tasks per node: one per GPU, or ``tasks_per_node`` processes on CPU nodes."""
        return self.gpus_per_node or self.tasks_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks


def _train_fields() -> dict[str, dataclasses.Field]:
    from vidact.config import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def resource_overrides(resources: SlurmResources, user_overrides: list[str]) -> list[str]:
    """The overrides that make the run's device count match the allocation.

    Only keys that exist in this vidact's ``TrainConfig`` are emitted, so the rendered command is
    valid whichever version of the training code runs it.
    """
    fields = _train_fields()
    given = {item.split("=", 1)[0].strip() for item in user_overrides if "=" in item}
    for key in RESOURCE_KEYS:
        if key in given:
            raise LaunchError(f"{key} is decided by the resources (--nodes, --gpus-per-node, --tasks-per-node); "
                              f"remove the override")
    missing = [k for k in RESOURCE_KEYS if k.split(".", 1)[1] not in fields]
    if resources.world_size > 1 and missing:
        raise LaunchError(f"{resources.world_size} tasks requested, but this vidact's TrainConfig has no "
                          f"{', '.join(missing)}: training would start {resources.world_size} independent "
                          f"single-device runs. Launch 1 node x 1 task, or update vidact.")
    out = []
    if "devices" in fields:
        out.append(f"train.devices={resources.tasks}")
    if "num_nodes" in fields:
        out.append(f"train.num_nodes={resources.nodes}")
    if "accelerator" in fields and resources.gpus_per_node == 0:
        out.append("train.accelerator=cpu")  # a CPU-only request must not grab a node's GPUs
    if "strategy" in fields and resources.world_size > 1 and "train.strategy" not in given:
        out.append("train.strategy=ddp")  # a recipe's own strategy (e.g. deepspeed) is kept: see render()
    return out


def _strategy_chosen_by_recipe(recipe: Path) -> bool:
    from vidact.config import load

    fields = _train_fields()
    if "strategy" not in fields:
        return False
    default = fields["strategy"].default
    return load(recipe).train.strategy != default


def resolve_recipe(recipe: str) -> Path:
    """The recipe's absolute path (jobs may start in another directory, or after a checkout moves)."""
    from vidact.config import RECIPES_DIR

    for candidate in (Path(recipe), RECIPES_DIR / recipe, RECIPES_DIR / f"{recipe}.yaml"):
        if candidate.is_file():
            return candidate.resolve()
    raise LaunchError(f"recipe {recipe!r} not found (as a path, or under {RECIPES_DIR})")


@dataclass
class Rendered:
    script: str
    job_name: str
    run_dir: str  # contains ${SLURM_JOB_ID} unless the overrides named one
    log_dir: Path
    overrides: list[str]  # what the tasks pass to `vidact train` (before run_dir)


def render(recipe: str, resources: SlurmResources, overrides: list[str] = (), *, job_name: str | None = None,
           run_root: str | Path = "runs", python: str = sys.executable) -> Rendered:
    """Fill ``slurm/train.sbatch``. The recipe is loaded with every override first (the same
    :func:`vidact.config.load` the job will run), so a bad key fails here, not in the queue. The job
    starts in the current directory (relative paths in the recipe keep their meaning)."""
    from vidact.config import load

    recipe_path = resolve_recipe(recipe)
    overrides = list(overrides)
    run_dir_given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].strip() == "run_dir"]
    overrides = [o for o in overrides if o.split("=", 1)[0].strip() != "run_dir"]
    extra = resource_overrides(resources, overrides)
    if "train.strategy=ddp" in extra and _strategy_chosen_by_recipe(recipe_path):
        extra.remove("train.strategy=ddp")
    task_overrides = [*extra, *overrides]  # the user's come last (the resource keys were refused above)
    cfg = load(recipe_path, task_overrides)
    name = job_name or cfg.name
    if not _SLURM_NAME.match(name) or name in ("bash", "interactive"):
        # Lightning ignores SLURM for jobs named bash/interactive (it takes them for a login shell).
        raise LaunchError(f"job name {name!r} is not usable: letters, digits, '_', '.', '-', and not "
                          f"'bash'/'interactive' (pass --job-name)")
    run_root = Path(run_root).resolve()
    run_dir = str(Path(run_dir_given[-1]).resolve()) if run_dir_given else f"{run_root}/{name}-${{SLURM_JOB_ID}}"
    log_dir = run_root / "slurm-logs"
    for what, path in (("run root", run_root), ("run_dir", run_dir.replace("${SLURM_JOB_ID}", "")),
                       ("working directory", Path.cwd())):
        if _UNSAFE_PATH.search(str(path)):
            raise LaunchError(f"{what} {str(path)!r} has blanks, quotes, '$', '`' or '\\' (unsafe in a batch script)")

    lines = []
    if resources.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={resources.gpus_per_node}")
    if resources.partition:
        lines.append(f"#SBATCH --partition={resources.partition}")
    if resources.account:
        lines.append(f"#SBATCH --account={resources.account}")
    command = " ".join(shlex.quote(a) for a in [python, "-m", "vidact.cli", "train", str(recipe_path),
                                                *task_overrides])
    fields = {
        "job_name": name, "nodes": str(resources.nodes), "tasks_per_node": str(resources.tasks),
        "cpus_per_task": str(resources.cpus_per_task), "time": resources.time.strip(),
        "signal_seconds": str(resources.warning_seconds), "log_dir": str(log_dir), "workdir": str(Path.cwd()),
        "run_dir": run_dir, "command": command,
    }
    # The optional directives take the whole line: no blank line is left among the #SBATCH ones.
    script = TEMPLATE.read_text().replace("{{resource_lines}}\n", "".join(line + "\n" for line in lines))
    for key, value in fields.items():
        script = script.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{\w+\}\}", script)
    assert not left, f"unfilled template fields {left}"
    return Rendered(script=script, job_name=name, run_dir=run_dir, log_dir=log_dir, overrides=task_overrides)


def submit(rendered: Rendered) -> str:
    """Write the script next to the logs and sbatch it; returns the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise LaunchError("sbatch not found: run on a Slurm login node (or start a local cluster with "
                          "scripts/slurm_local.sh start)")
    rendered.log_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{rendered.job_name}-", suffix=".sbatch", dir=rendered.log_dir)
    with os.fdopen(fd, "w") as f:
        f.write(rendered.script)
    script_path = Path(name)
    proc = subprocess.run([sbatch, "--parsable", str(script_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        script_path.unlink()
        raise LaunchError(f"sbatch refused the job: {proc.stderr.strip() or proc.stdout.strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    # Keep the exact script each job ran beside its logs.
    script_path.rename(rendered.log_dir / f"{rendered.job_name}-{job_id}.sbatch")
    return job_id


def slurm_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidact launch slurm",
                                description="Render slurm/train.sbatch for a recipe and resources, and sbatch it.")
    p.add_argument("recipe", help="recipe YAML (path, or a name under recipes/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides passed to every task, e.g. train.steps=1000")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, required=True, help="one task per GPU; 0 runs CPU processes")
    p.add_argument("--tasks-per-node", type=int, default=None, help="CPU processes per node when --gpus-per-node 0")
    p.add_argument("--cpus-per-task", type=int, default=4)
    p.add_argument("--time", default="1-00:00:00", help="Slurm time limit (default 1-00:00:00)")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--job-name", default=None, help="default: the recipe's name")
    p.add_argument("--run-root", default="runs", help="run directories go to RUN_ROOT/<name>-<job id>")
    p.add_argument("--python", default=sys.executable, help="interpreter on the compute nodes (default: this one)")
    p.add_argument("--warning-seconds", type=int, default=SIGNAL_SECONDS,
                   help="SIGUSR1 (checkpoint + requeue) this long before the time limit (default 90)")
    p.add_argument("--allow-many-gpus-per-node", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the script instead of submitting it")
    return p


def main(argv: list[str]) -> int:
    """``vidact launch SCHEDULER ...``. Options and overrides may come in any order."""
    if not argv or argv[0] not in ("slurm",):
        print("usage: vidact launch slurm RECIPE --nodes N --gpus-per-node G [options] [key=value ...]\n"
              "(vidact launch slurm --help for the options)", file=sys.stderr)
        return 2
    return main_slurm(slurm_parser().parse_intermixed_args(argv[1:]))


def main_slurm(args: argparse.Namespace) -> int:
    try:
        return _main_slurm(args)
    except LaunchError as e:
        print(f"vidact launch slurm: error: {e}", file=sys.stderr)
        return 2


def _main_slurm(args: argparse.Namespace) -> int:
    resources = SlurmResources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                               cpus_per_task=args.cpus_per_task, time=args.time, partition=args.partition,
                               account=args.account, allow_many_gpus_per_node=args.allow_many_gpus_per_node,
                               warning_seconds=args.warning_seconds)
    rendered = render(args.recipe, resources, args.overrides, job_name=args.job_name, run_root=args.run_root,
                      python=args.python)
    if args.dry_run:
        print(rendered.script, end="")
        return 0
    job_id = submit(rendered)
    print(f"vidact launch: submitted job {job_id} ({resources.nodes} node(s) x {resources.tasks} task(s))")
    print(f"  run dir {rendered.run_dir.replace('${SLURM_JOB_ID}', job_id)}")
    print(f"  logs    {rendered.log_dir}/{rendered.job_name}-{job_id}.out, .restart<N>.log")
    return 0
