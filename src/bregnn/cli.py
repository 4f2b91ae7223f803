"""The ``bregnn`` command (also ``python -m bregnn``): one sub-command per experiment.

:data:`COMMANDS` lists the sub-command modules explicitly. Each module defines

- ``NAME``: the sub-command name (e.g. ``"two-spiral"``);
- ``HELP``: a one-line description;
- ``add_arguments(parser, argv)``: registers its options on an ``argparse`` parser;
  ``argv`` are the command-line words after the sub-command's name, so that options may
  depend on others (``--method bcd --help`` shows BCD's settings);
- ``run(args) -> int``: runs it and returns an exit status.

Only the chosen sub-command's parser is built. Every sub-command also gets ``--overwrite``
(replace the run in ``--out``) and ``--threads N`` (torch intra-op threads, applied here)
unless it defines them itself; ``--help`` shows every option's default.

Errors are one line on stderr, ``bregnn <command>: error: <message>``: bad arguments,
settings and run directories (``ValueError``, ``FileNotFoundError``,
:class:`~bregnn.runs.RunError`) exit with status 2, a diverged training run
(``FloatingPointError``) with 3, an interrupt with 130.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import sys
from collections.abc import Sequence
from types import ModuleType

import torch

from bregnn import __version__
from bregnn.experiments import (
    demo,
    depth_study,
    image_classify,
    lifted_autoencoder,
    lifted_classify,
    reproduce,
    two_spiral,
)
from bregnn.registry import Registry
from bregnn.utils import positive_int

__all__ = ["COMMANDS", "DefaultsFormatter", "build_parser", "command_parser", "main"]

COMMANDS: Registry[ModuleType] = Registry("command")
for _module in (
    demo,
    two_spiral,
    depth_study,
    image_classify,
    lifted_classify,
    lifted_autoencoder,
    reproduce,
):
    COMMANDS.register(_module.NAME, _module)

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option that takes a value and whose default is not
    ``None``/``SUPPRESS``, with or without a help text (``ArgumentDefaultsHelpFormatter``
    needs the text); flags (``store_true``, ...) are off unless given."""

    def _format_action(self, action: argparse.Action) -> str:
        default = action.default
        if (
            action.help is not argparse.SUPPRESS
            and action.option_strings
            and action.nargs != 0  # a flag is off unless given: no default to show
            and default is not None
            and default is not argparse.SUPPRESS
            and "%(default)" not in (action.help or "")
        ):
            action = copy.copy(action)
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            shown = str(shown).replace("%", "%%") if shown != "" else "''"
            action.help = f"{action.help or ''} (default: {shown})".strip()
        return super()._format_action(action)


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: errors are one line naming the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _CommandLine(argparse.ArgumentParser):
    """The top-level parser: it lists the sub-commands; :meth:`parse_args` builds the chosen
    one's parser from the words after its name and returns that parser's namespace."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        return _parse(self, list(sys.argv[1:] if args is None else args))[1]


_COMMON_OPTIONS = (
    ("--overwrite", {"action": "store_true", "help": "replace the run in --out (deletes its files)"}),
    ("--threads", {"type": positive_int, "default": None, "metavar": "N",
                   "help": "torch intra-op threads (default: torch's own choice)"}),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``bregnn`` parser (``--help`` lists every command with its HELP)."""
    parser = _CommandLine(
        prog="bregnn",
        description="Bregman neural networks and lifted Bregman training: reproductions.",
        epilog="Run `bregnn COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"bregnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        sub.add_parser(name, help=module.HELP, add_help=False)
    return parser


def command_parser(name: str, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser of sub-command ``name`` for the words ``argv`` that follow it."""
    module = COMMANDS.get(name)
    parser = _CommandParser(
        prog=f"bregnn {module.NAME}", description=module.HELP, formatter_class=DefaultsFormatter
    )
    if len(inspect.signature(module.add_arguments).parameters) >= 2:
        module.add_arguments(parser, list(argv))
    else:
        module.add_arguments(parser)
    common = parser.add_argument_group("options of every command")
    for flag, kwargs in _COMMON_OPTIONS:
        try:
            common.add_argument(flag, **kwargs)
        except argparse.ArgumentError:
            pass  # the command defines it itself
    parser.set_defaults(command=module.NAME)
    return parser


def _parse(
    top: argparse.ArgumentParser, argv: list[str]
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Split ``argv`` at the command's name (top-level options take no values), let the
    top-level parser handle ``--help``/``--version``/a bad name, then parse the rest."""
    split = next((i for i, word in enumerate(argv) if not word.startswith("-")), len(argv))
    head, rest = argv[: split + 1], argv[split + 1 :]
    name = argparse.ArgumentParser.parse_args(top, head).command
    parser = command_parser(name, rest)
    args = parser.parse_args(rest)
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        parser.error(f"argument --threads: must be a positive integer; got {threads}")
    return parser, args


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bregnn`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser, args = _parse(build_parser(), list(sys.argv[1:] if argv is None else argv))
    run = COMMANDS.get(args.command).run
    threads = torch.get_num_threads()
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)
    try:
        return int(run(args) or 0)
    except FloatingPointError as err:
        parser.exit(EXIT_DIVERGED, f"{parser.prog}: error: {err}\n")
    except (ValueError, FileNotFoundError) as err:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {err}\n")
    except KeyboardInterrupt:
        print("\ninterrupted; the last checkpoint (if any) is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        torch.set_num_threads(threads)  # main() may run inside a longer-lived process


if __name__ == "__main__":
    sys.exit(main())
