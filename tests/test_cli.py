"""The ``bregnn`` command: every sub-command has help; errors are reported cleanly."""

from __future__ import annotations

import pytest

from bregnn.cli import build_parser, main
from bregnn.experiments import experiments, get_experiment


def test_top_level_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in experiments():
        assert name in out


@pytest.mark.parametrize("name", sorted(experiments()))
def test_every_subcommand_has_help(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_unknown_experiment_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        get_experiment("nope")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nope"])
