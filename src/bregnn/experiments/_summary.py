"""Shared reporting for the seed grids: mean +- std over seeds, markdown and CSV tables,
per-epoch curves averaged over seeds."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["csv_text", "markdown_table", "mean_curves", "read_metrics", "summarize_seeds"]


def summarize_seeds(
    runs: Sequence[dict[str, Any]],
    keys: Sequence[str],
    means: Sequence[str] = (),
    sort: bool = False,
) -> list[dict[str, Any]]:
    """One row per distinct ``keys`` tuple: the keys, ``seeds``, mean and population std of
    ``train_accuracy``/``test_accuracy``, and ``<name>_mean`` for each of ``means``.

    Rows come in the order the configurations first appear (sorted with ``sort=True``).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    items = sorted(groups.items()) if sort else list(groups.items())
    rows = []
    for values, members in items:
        row: dict[str, Any] = dict(zip(keys, values))
        row["seeds"] = len(members)
        for split in ("train", "test"):
            acc = np.array([m[f"{split}_accuracy"] for m in members], dtype=float)
            row[f"{split}_mean"], row[f"{split}_std"] = float(acc.mean()), float(acc.std())
        for name in means:
            row[f"{name}_mean"] = float(np.mean([m[name] for m in members]))
        rows.append(row)
    return rows


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    trailing: Sequence[tuple[str, str]] = (),
) -> str:
    """A markdown table: ``columns`` and ``trailing`` are ``(header, format)`` pairs whose
    format is applied with ``format.format(**row)``; between them stand the seed count and
    train / test accuracy as ``mean +- std`` in percent."""
    headers = [h for h, _ in columns] + ["seeds", "train acc (%)", "test acc (%)"]
    headers += [h for h, _ in trailing]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [fmt.format(**r) for _, fmt in columns] + [str(r["seeds"])]
        cells += [
            f"{100 * r[f'{s}_mean']:.1f} +- {100 * r[f'{s}_std']:.1f}" for s in ("train", "test")
        ]
        cells += [fmt.format(**r) for _, fmt in trailing]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as CSV text (header from the first row's keys)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` (as :func:`bregnn.train.fit` writes it) as floats
    (empty cells: NaN)."""
    with open(path, newline="") as fh:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


def mean_curves(paths: Sequence[str | Path]) -> list[dict[str, float]]:
    """Per epoch, over the runs whose ``metrics.csv`` files are ``paths`` (those that exist):
    ``epoch``, ``runs`` (how many reached it: early stopping ends runs at different
    epochs) and ``<column>_mean`` / ``<column>_std`` (population std) of every other column."""
    tables = [read_metrics(p) for p in paths if Path(p).is_file()]
    by_epoch: dict[int, list[dict[str, float]]] = {}
    for table in tables:
        for row in table:
            by_epoch.setdefault(int(row["epoch"]), []).append(row)
    out = []
    for epoch in sorted(by_epoch):
        members = by_epoch[epoch]
        row: dict[str, float] = {"epoch": epoch, "runs": len(members)}
        for key in members[0]:
            if key == "epoch":
                continue
            values = np.array([m.get(key, math.nan) for m in members], dtype=float)
            row[f"{key}_mean"], row[f"{key}_std"] = float(values.mean()), float(values.std())
        out.append(row)
    return out
