"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_lifted_training_of_your_own_network(capsys):
    namespace: dict = {}
    exec(
        compile(_block_after("## Lifted training of your own network"), "README", "exec"), namespace
    )
    result = namespace["result"]
    assert type(namespace["trained"]) is type(namespace["model"])
    assert result.history[-1]["train_accuracy"] > 0.85
    assert "train accuracy" in capsys.readouterr().out


def test_bregman_networks_example():
    namespace: dict = {}
    exec(compile(_block_after("## What is in it"), "README", "exec"), namespace)
    assert namespace["diag"] is not None
