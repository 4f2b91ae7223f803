"""The ``bregnn`` command: every sub-command has help; errors are reported cleanly."""

from __future__ import annotations

import argparse
import types

import pytest

from bregnn import cli
from bregnn.cli import COMMANDS, build_parser, command_parser, main


def test_top_level_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, module in COMMANDS.items():
        assert name in out and module.HELP[:30] in out


def test_the_commands_are_listed_explicitly() -> None:
    assert COMMANDS.names() == [
        "demo",
        "two-spiral",
        "depth-study",
        "image-classify",
        "lifted-classify",
        "lifted-autoencoder",
        "reproduce",
    ]


@pytest.mark.parametrize("name", COMMANDS.names())
def test_every_subcommand_has_help_with_defaults(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bregnn {name}")
    assert "--overwrite" in out and "--threads" in out
    assert "(default: " in out


def test_help_shows_defaults_without_help_text(capsys) -> None:
    parser = command_parser("depth-study")
    text = parser.format_help()
    assert "(default: 5)" in text
    assert "(default: 2 9)" in text  # nargs lists read as typed
    assert "--no-figures" in text and "(default: False)" not in text  # flags show none


def test_unknown_command_lists_the_valid_ones(capsys) -> None:
    with pytest.raises(ValueError, match="unknown command 'nope'; valid commands"):
        COMMANDS.get("nope")
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["nope"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-2", "0", "two"])
def test_bad_threads_is_one_line(value: str, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["two-spiral", "--threads", value, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("bregnn two-spiral: error: argument --threads:")
    assert not (tmp_path / "x").exists()


def test_add_arguments_gets_the_words_after_the_command(monkeypatch) -> None:
    seen = {}

    def add_arguments(parser: argparse.ArgumentParser, argv) -> None:
        seen["argv"] = list(argv)
        parser.add_argument("--method", default="a")
        if "b" in argv:
            parser.add_argument("--b-only", type=int, default=3)

    def add_arguments_old(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--x", type=int, default=1)

    new = types.SimpleNamespace(NAME="two-args", HELP="h", add_arguments=add_arguments)
    old = types.SimpleNamespace(NAME="one-arg", HELP="h", add_arguments=add_arguments_old)
    registry = cli.Registry("command")
    registry.register("two-args", new)
    registry.register("one-arg", old)
    monkeypatch.setattr(cli, "COMMANDS", registry)
    args = build_parser().parse_args(["two-args", "--method", "b", "--b-only", "5"])
    assert seen["argv"] == ["--method", "b", "--b-only", "5"]
    assert (args.command, args.method, args.b_only, args.overwrite) == ("two-args", "b", 5, False)
    assert build_parser().parse_args(["one-arg", "--threads", "2"]).threads == 2
