"""The ``bregnn`` command: one sub-command per experiment (see :mod:`bregnn.experiments`)."""

from __future__ import annotations

import argparse
import sys

from bregnn import __version__
from bregnn.experiments import experiments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bregnn",
        description="Bregman neural networks and lifted Bregman training: reproductions.",
    )
    parser.add_argument("--version", action="version", version=f"bregnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in experiments().items():
        child = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"bregnn {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        print("\ninterrupted; the last checkpoint (if any) is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
