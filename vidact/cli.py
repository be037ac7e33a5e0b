"""``vidact <command> ...``: dispatch only. Heavy imports happen inside the command that needs
them, so ``vidact --help`` answers at once."""

from __future__ import annotations

import argparse
import sys


def _dry_run(args: argparse.Namespace) -> int:
    from vidact.dryrun import dry_run

    return dry_run(args.recipe, args.overrides, batch_size=args.batch_size)


def _train(args: argparse.Namespace) -> int:
    from vidact.config import load
    from vidact.lit.module import NonFiniteLossError
    from vidact.train import train

    try:
        run_dir = train(load(args.recipe, args.overrides))
    except NonFiniteLossError as e:
        print(f"vidact train: {e}", file=sys.stderr)
        return 1
    print(f"vidact train: done, run directory {run_dir}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from vidact.data.commands import main as data_main

    return data_main(args.args)


def _flavors(args: argparse.Namespace) -> int:
    from vidact.models.configuration import FLAVORS

    for name, (dim, depth, heads) in FLAVORS.items():
        print(f"{name:>5}: dim={dim} depth={depth} heads={heads}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidact", description="Joint video-action generative models for robots.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    p = sub.add_parser("flavors", help="list the model size registry")
    p.set_defaults(func=_flavors)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # config and input errors are messages, not tracebacks
        from vidact.config import ConfigError

        if isinstance(e, (ConfigError, FileNotFoundError)):
            print(f"vidact {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
