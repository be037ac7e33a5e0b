"""``vidact <command> ...``: dispatch only. Heavy imports happen inside the command that needs
them, so ``vidact --help`` answers at once."""

from __future__ import annotations

import argparse
import os
import sys


def _dry_run(args: argparse.Namespace) -> int:
    from vidact.dryrun import dry_run

    return dry_run(args.recipe, args.overrides, batch_size=args.batch_size)


def _train(args: argparse.Namespace) -> int:
    from vidact.config import load
    from vidact.lit.module import NonFiniteLossError
    from vidact.train import TrainingInterrupted, train

    try:
        run_dir = train(load(args.recipe, args.overrides))
    except NonFiniteLossError as e:
        print(f"vidact train: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:  # SIGTERM / SIGUSR1: checkpointed; 0 if SLURM requeued the job
        print(f"vidact train: {e}", file=sys.stderr)
        return e.exit_code
    print(f"vidact train: done, run directory {run_dir}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from vidact.data.commands import main as data_main

    return data_main(args.args)


def _imagine(args: argparse.Namespace) -> int:
    from vidact.worldmodel.imagine import main as imagine_main

    return imagine_main(args.args)


def _autoencoder(args: argparse.Namespace) -> int:
    from vidact.worldmodel.autoencoder import main as autoencoder_main

    return autoencoder_main(args.args)


def _scene_encoder(args: argparse.Namespace) -> int:
    from vidact.scene_encoder import main as scene_encoder_main

    return scene_encoder_main(args.args)


def _distill(args: argparse.Namespace) -> int:
    from vidact.export.distill import main as distill_main

    return distill_main(args.args)


def _label(args: argparse.Namespace) -> int:
    from vidact.data.label import main as label_main

    return label_main(args.args)


def _synth(args: argparse.Namespace) -> int:
    from vidact.worldmodel.synth import main as synth_main

    return synth_main(args.args)


def _judge(args: argparse.Namespace) -> int:
    from vidact.worldmodel.judge import main as judge_main

    return judge_main(args.args)


def _report(args: argparse.Namespace) -> int:
    from vidact.report import write_report

    print(f"vidact report: {write_report(args.run_dir, args.eval_dirs, args.out)}")
    return 0


def _flavors(args: argparse.Namespace) -> int:
    from vidact.models.configuration import FLAVORS

    for name, (dim, depth, heads) in FLAVORS.items():
        print(f"{name:>5}: dim={dim} depth={depth} heads={heads}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from vidact.export.package import package
    from vidact.export.torch_export import ExportParityError

    try:
        out = package(args.checkpoint, args.out, mode=args.mode, n_action_steps=args.n_action_steps,
                      prefer_ema=not args.no_ema, config_path=args.config, overwrite=args.overwrite,
                      format=args.format)
    except ExportParityError as e:
        print(f"vidact export: error: {e}; nothing was written", file=sys.stderr)
        return 1
    print(f"vidact export: policy bundle written to {out}")
    if args.format == "torch_export":
        print(f"vidact export: torch.export program written to {out / 'policy_fast.pt2'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, as `vidact data metaworld` does
    from vidact.data.metaworld import TaskListError
    from vidact.deploy.planner import PlanningError
    from vidact.deploy.policy import ObservationError, UnsafeActionError
    from vidact.deploy.sim import main as eval_main
    from vidact.worldmodel.env import WorldModelEnvError
    from vidact.worldmodel.judge import JudgeError

    try:
        return eval_main(args)
    except TaskListError as e:
        print(f"vidact eval: error: {e}", file=sys.stderr)
        return 2
    except (ObservationError, UnsafeActionError) as e:
        print(f"vidact eval: error: {e}", file=sys.stderr)
        return 1
    except (PlanningError, JudgeError, WorldModelEnvError) as e:
        print(f"vidact eval: error: {e}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from vidact.deploy.planner import PlanningError
    from vidact.deploy.server import ServeError, main as serve_main
    from vidact.worldmodel.judge import JudgeError

    try:
        return serve_main(args)
    except (ServeError, PlanningError, JudgeError) as e:
        print(f"vidact serve: error: {e}", file=sys.stderr)
        return 2


def _drive(args: argparse.Namespace) -> int:
    from vidact.deploy.drive import DriveError, main as drive_main
    from vidact.deploy.planner import PlanningError
    from vidact.deploy.policy import ObservationError
    from vidact.worldmodel.judge import JudgeError

    try:
        return drive_main(args)
    except (DriveError, ObservationError, PlanningError, JudgeError) as e:
        print(f"vidact drive: error: {e}", file=sys.stderr)
        return 2


def _add_planner(p: argparse.ArgumentParser) -> None:
    p.add_argument("--planner", default=None, choices=["best_of_n", "cem"], help="plan in imagination: sample "
                   "candidate chunks, imagine each with forward_dynamics, execute the one the judge scores best")
    p.add_argument("--candidates", type=int, default=8, help="planning: chunks sampled per decision (N)")
    p.add_argument("--cem-iterations", type=int, default=2, help="--planner cem: refits after the first N samples")
    p.add_argument("--elites", type=int, default=None, help="--planner cem: chunks kept per refit (default N/4, >= 2)")
    p.add_argument("--imagine-steps", type=int, default=None, help="planning: sampler steps for imagining the "
                   "candidates (default: the policy's; the latent world-model recipe imagines best with 2)")
    p.add_argument("--plan-horizon", type=int, default=1, help="planning: chunks imagined per candidate (2: the "
                   "candidate, then the policy's next chunk from the imagined frames; scored per --plan-score)")
    p.add_argument("--plan-score", default="last", choices=["last", "mean"], help="planning: score the last "
                   "imagined frame of the horizon, or the mean over all of them (the judge's value, or closeness "
                   "to --goal-image)")
    p.add_argument("--plan-noise-scale", type=float, default=None, help="planning: action noise of every candidate "
                   "but the first, which is the plain policy's (default: the policy's --noise-scale; a policy at 0 needs one "
                   "above 0, e.g. 1)")
    p.add_argument("--plan-margin", type=float, default=0.0, help="planning: execute another candidate only if its "
                   "score beats the policy's own chunk (candidate 0) by more than this (judge values are in [0, 1]); "
                   "0: the best candidate")
    p.add_argument("--plan-model", default=None, metavar="RUN", help="planning: imagine the candidates with this world "
                   "model (run directory, checkpoint or bundle; same cameras, sizes, actions, state, history and chunk) "
                   "instead of the policy's own; its judge scores them. Any policy proposes, even one that imagines "
                   "nothing")
    p.add_argument("--judge", default=None, help="planning: judge folder (default: BUNDLE/judge, or the --plan-model's; "
                   "`vidact judge`)")
    p.add_argument("--goal-image", default=None, help="planning: score imagined futures by closeness to this image "
                   "(the model's frame size) in the model's latent space instead of by the judge")


def _limit(text: str) -> float:
    """A positive number, or 'off' (infinity: no limit)."""
    value = float("inf") if text.lower() == "off" else float(text)
    if not value > 0:
        raise ValueError(text)
    return value


_limit.__name__ = "positive number or 'off'"  # argparse's "invalid ... value" message


def _add_observation_checks(p: argparse.ArgumentParser, age_help: str | None) -> None:
    """--max-state-deviation (and --max-observation-age): vidact.deploy.policy.ObservationChecks.from_args.
    Defaults are the library's (not imported here: --help must not import torch)."""
    p.add_argument("--max-state-deviation", type=_limit, default=None, metavar="N",
                   help="refuse a state more than N training standard deviations from the mean (half q01..q99 "
                        "ranges from their midpoint for quantile-normalized bundles) in any dimension; 'off' "
                        "disables (default 10). NaN/inf values, wrong camera channels and a wrong state size are "
                        "always refused")
    if age_help:
        p.add_argument("--max-observation-age", type=_limit, default=None, metavar="SECONDS", help=age_help)


class _Parser(argparse.ArgumentParser):
    """``passthrough="--robot."``: options with that prefix are collected in ``args.robot_args``
    for a parser of their own (LeRobot's draccus config registry for ``vidact drive``)."""

    def __init__(self, *args, passthrough: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.passthrough = passthrough

    def parse_known_args(self, args=None, namespace=None):
        if not self.passthrough:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        ours = [a for a in args if a.startswith(self.passthrough)]
        namespace, rest = super().parse_known_args([a for a in args if not a.startswith(self.passthrough)], namespace)
        namespace.robot_args = ours
        return namespace, rest


def _launch(args: argparse.Namespace) -> int:
    from vidact.launch import main as launch_main

    return launch_main(args.args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidact", description="Joint video-action generative models for robots.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("dry-run", help="validate a recipe, build everything, run one step on a fake batch")
    p.add_argument("recipe", help="recipe YAML (path, or a name under recipes/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.flavor=S")
    p.add_argument("--batch-size", type=int, default=2)
    p.set_defaults(func=_dry_run)

    p = sub.add_parser("train", help="train a recipe; resumes from the run directory's last checkpoint")
    p.add_argument("recipe", help="recipe YAML (path, or a name under recipes/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100 run_dir=runs/x")
    p.set_defaults(func=_train)

    p = sub.add_parser("data", help="generate, inspect and convert datasets (vidact data --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_data)

    p = sub.add_parser("export", help="checkpoint or run directory -> policy bundle (LeRobot pretrained_model/ layout)")
    p.add_argument("checkpoint", help="run directory, .ckpt file or DeepSpeed ZeRO checkpoint folder")
    p.add_argument("out", help="bundle folder to write")
    p.add_argument("--mode", default="policy_fast", choices=["policy_fast", "policy"], help="default inference mode")
    p.add_argument("--n-action-steps", type=int, default=None, help="open-loop steps per chunk (default K/2)")
    p.add_argument("--config", default=None, help="config.yaml, when the checkpoint is not inside its run directory")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument("--format", default="bundle", choices=["bundle", "torch_export"],
                   help="torch_export: also write policy_fast.pt2 (torch.export of the policy_fast path), "
                        "checked against PyTorch on the same inputs and noise")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export)

    p = sub.add_parser("eval", help="closed-loop evaluation of a bundle in simulation")
    p.add_argument("bundle")
    p.add_argument("--env", default="metaworld", choices=["metaworld", "world_model"], help="world_model: run the "
                   "policy inside a world model (--world-model, --dataset) instead of the simulator, its judge "
                   "deciding success")
    p.add_argument("--world-model", default=None, metavar="RUN", help="--env world_model: the world model (run "
                   "directory or bundle, with a judge from `vidact judge`)")
    p.add_argument("--dataset", default=None, help="--env world_model: LeRobot dataset whose episodes' first frames "
                   "start the imagined episodes (--task picks that task's)")
    p.add_argument("--batch-size", type=int, default=10, help="--env world_model: episodes imagined at once")
    p.add_argument("--task", default=None, help="one task, e.g. button-press-topdown-v3")
    p.add_argument("--benchmark", default=None, metavar="MT10|MT25|MT50", help="instead of --task: every task of "
                   "this MetaWorld benchmark, each in OUT/TASK/, with OUT/benchmark.json and benchmark.md (per-task "
                   "table, average with a Wilson interval, a success and a failure video per task)")
    p.add_argument("--tasks", nargs="+", default=None, help="instead of --task: these tasks, as --benchmark does")
    p.add_argument("--workers", type=int, default=None, help="--benchmark/--tasks: processes evaluating tasks in "
                   "parallel, one torch thread each (default: one per CPU core, at most one per task)")
    p.add_argument("--episodes", type=int, default=10, help="episodes (per task)")
    p.add_argument("--out", required=True, help="folder for results.json and rollout videos")
    p.add_argument("--mode", default=None, choices=["policy_fast", "policy"], help="default: the bundle's")
    p.add_argument("--executor", default="open_loop", choices=["open_loop", "temporal_ensemble", "rtc"])
    p.add_argument("--n-action-steps", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=400, help="episode length limit (LeRobot's MetaWorld: 400)")
    p.add_argument("--seed", type=int, default=None, help="first evaluation seed (default: held-out range)")
    p.add_argument("--training-scenes", action="store_true", help="--task on MetaWorld: the scenes the bundle's "
                   "demos were generated from instead of held-out ones (does the policy fit its own demos?); "
                   "results are not held out")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the bundle's)")
    p.add_argument("--noise-scale", type=float, default=None, help="standard deviation of the action noise the "
                   "sampler starts from (default: the bundle's; 1 unless its recipe set sampler.noise_scale)")
    p.add_argument("--videos", type=int, default=None, help="episodes to record as mp4 (default: all)")
    p.add_argument("--save-dataset", default=None, metavar="DIR", help="also write every rollout to a LeRobot "
                   "dataset here (one per task under DIR/TASK with --benchmark/--tasks), success in next.success")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --save-dataset folder")
    p.add_argument("--execution-horizon", type=int, default=None, help="rtc: steps between chunk requests (K/2)")
    p.add_argument("--delay", type=int, default=0, help="rtc: inference delay in control steps, simulated")
    p.add_argument("--overlap", type=int, default=0, help="rtc: steps cross-faded from the old chunk to the new")
    p.add_argument("--ensemble-coeff", type=float, default=0.01, help="temporal_ensemble: weight exp(-coeff * i)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared CPU: BENCHMARKS.md)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network's backbone (CPU: 2-25%% less "
                   "per chunk after 25-50 s compiling the first)")
    _add_observation_checks(p, age_help=None)
    _add_planner(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser("serve", help="serve a bundle over websocket + msgpack (openpi protocol)",
                       description="Each connection is its own episode. Errors in a request are answered with a "
                                   "one-line text message (openpi's clients raise it); tracebacks stay in this log.")
    p.add_argument("bundle")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only; "
                   "0.0.0.0 listens on every interface and prints a warning)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--mode", default=None, choices=["policy_fast", "policy"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--noise-scale", type=float, default=None, help="action noise's standard deviation (default: "
                   "the bundle's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared CPU: BENCHMARKS.md)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network's backbone (CPU: 2-25%% less "
                   "per chunk after 25-50 s compiling the first)")
    p.add_argument("--max-message-bytes", type=int, default=None, metavar="N",
                   help="close connections that send larger messages (default: 4x the largest observation the "
                        "bundle expects, float32 cameras at their recorded size, at least 4 MiB)")
    p.add_argument("--token", default=None, help="shared secret clients must send as 'Authorization: Api-Key TOKEN' "
                   "(openpi-client: api_key=TOKEN); default $VIDACT_SERVE_TOKEN, which keeps it out of `ps`")
    _add_observation_checks(p, age_help="refuse requests whose 'capture_time' (client's time.time() at capture; "
                                        "clocks must agree) is older than this, or that lack it (default: no check)")
    _add_planner(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser("drive", passthrough="--robot.", help="drive a LeRobot robot (or metaworld_sim) with a bundle",
                       usage="vidact drive BUNDLE --robot.type=NAME [--robot.KEY=VALUE ...] [options]",
                       description="Robot options go to LeRobot's robot config registry, as in lerobot-record: "
                                   "--robot.type=so100_follower --robot.port=/dev/ttyUSB0 --robot.id=arm "
                                   "--robot.cameras='{front: {type: opencv, index_or_path: 0, width: 640, "
                                   "height: 480, fps: 30}}'; or the simulated --robot.type=metaworld_sim "
                                   "--robot.task=button-press-topdown-v3 [--robot.seed=N --robot.height=H "
                                   "--robot.width=W --robot.cameras='[corner2]'].")
    p.add_argument("bundle")
    p.add_argument("--fps", type=float, default=30.0, help="control rate (Hz)")
    p.add_argument("--steps", type=int, default=None, help="stop after N control steps")
    p.add_argument("--seconds", type=float, default=None, help="stop after S seconds (Ctrl-C also stops)")
    p.add_argument("--task", default=None, help="instruction (default: the simulated robot's task description)")
    p.add_argument("--camera", action="append", default=None, metavar="POLICY_KEY=ROBOT_KEY",
                   help="map a policy camera to a robot camera (repeatable)")
    p.add_argument("--state-keys", default=None, help="robot observations forming the state, comma-separated "
                   "(default: its scalar observations in order)")
    p.add_argument("--action-keys", default=None, help="robot action keys, comma-separated (default: all, in order)")
    p.add_argument("--record", default=None, metavar="PATH.mp4", help="record the camera to a video")
    p.add_argument("--record-camera", default=None, help="robot camera to record (default: the first mapped one)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the summary as JSON")
    p.add_argument("--stop-on-success", action="store_true", help="simulated robots: stop at the first success")
    p.add_argument("--mode", default=None, choices=["policy_fast", "policy"], help="default: the bundle's")
    p.add_argument("--executor", default="open_loop", choices=["open_loop", "temporal_ensemble", "rtc", "async"],
                   help="async: the next chunk is computed in a background thread while the current one runs")
    p.add_argument("--n-action-steps", type=int, default=None)
    p.add_argument("--sampler-steps", type=int, default=None, help="sampler steps (default: the bundle's)")
    p.add_argument("--noise-scale", type=float, default=None, help="action noise's standard deviation (default: "
                   "the bundle's)")
    p.add_argument("--execution-horizon", type=int, default=None, help="rtc/async: steps between chunk requests "
                   "(K/2)")
    p.add_argument("--delay", default="0", help="rtc: inference delay in control steps, or 'auto' (measured)")
    p.add_argument("--overlap", type=int, default=0, help="rtc/async: steps cross-faded from the old chunk to the "
                   "new")
    p.add_argument("--ensemble-coeff", type=float, default=0.01, help="temporal_ensemble: weight exp(-coeff * i)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared CPU: BENCHMARKS.md)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network's backbone (CPU: 2-25%% less "
                   "per chunk after 25-50 s compiling the first)")
    p.add_argument("--max-bad-observations", type=int, default=0, metavar="N",
                   help="refused observations in a row to ride out by holding (sending nothing) before stopping "
                        "(default 0: the first refused observation stops the robot)")
    _add_observation_checks(p, age_help="refuse an observation whose read started more than this many seconds "
                                        "before it reached the policy (a stalled camera or bus; default: no check)")
    _add_planner(p)
    p.set_defaults(func=_drive)

    p = sub.add_parser("launch", help="submit a recipe to a cluster (vidact launch slurm --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_launch)

    p = sub.add_parser("imagine", help="roll the model forward as a world model from real frames; videos + metrics "
                       "(vidact imagine --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_imagine)

    p = sub.add_parser("autoencoder", help="train a frame autoencoder on a dataset's frames: the latent space a world "
                       "model predicts in (vidact autoencoder --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_autoencoder)

    p = sub.add_parser("scene-encoder", help="pretrain a recipe's observation encoder and scene-state head alone on "
                       "frames with object and goal positions; weights a policy starts from (vidact scene-encoder --help)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_scene_encoder)

    p = sub.add_parser("judge", help="train the judge of imagined futures (value / task-done from frames) a planner "
                       "scores candidates with (vidact judge --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_judge)

    p = sub.add_parser("label", help="infer actions for action-free videos with inverse dynamics; a LeRobot dataset "
                       "to train on (vidact label --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_label)

    p = sub.add_parser("synth", help="imagine whole episodes from new scenes' first frames, keep the ones the judge "
                       "accepts; a LeRobot dataset to train on (vidact synth --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_synth)

    p = sub.add_parser("distill", help="a few-step sampler: train a copy of a bundle's network to reach its "
                       "sampler's output in 1-2 steps; a new bundle (vidact distill --help)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_distill)

    p = sub.add_parser("report", help="success rates, training curves and rollout videos on one page")
    p.add_argument("run_dir")
    p.add_argument("eval_dirs", nargs="+", help="folders written by `vidact eval` or `vidact imagine`")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_report)

    p = sub.add_parser("flavors", help="list the model size registry")
    p.set_defaults(func=_flavors)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "args"):  # forwarding commands: argparse's REMAINDER leaves a leading
        args.args = extra + args.args    # option (`vidact data --help`) unparsed; it is theirs
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # config and input errors are messages, not tracebacks
        from vidact.config import ConfigError

        if isinstance(e, (ConfigError, FileNotFoundError, FileExistsError)):
            print(f"vidact {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
