"""Griffe extension used by the documentation build (``mkdocs.yml``).

The docstrings of ``bregnn`` are Google style with a few reStructuredText constructs.
This extension rewrites them into the Markdown that mkdocstrings renders, before griffe
parses the sections, keeping the number of lines (so that griffe's warnings name the
lines of the source files):

- ``:math:`x``` becomes inline math ``\\(x\\)`` and a ``.. math::`` block becomes a
  display block ``$$ ... $$`` (both rendered by ``pymdownx.arithmatex``);
- ``:func:``, ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``, ``:exc:`` and
  ``:obj:`` roles become cross-references, resolved in the scope of the documented
  object; a name that does not resolve is shown as code, without a link or a warning;
- an ``Args:`` entry naming several parameters (``in_features, out_features: sizes.``)
  becomes the entry of the first one, naming the others (``in_features: (and
  ``out_features``) sizes.``), so that griffe matches it with the signature;
- a reStructuredText simple table (columns framed by ``====  ====`` lines) becomes a
  Markdown table;
- a doctest block (``>>>`` lines) outside a Google section becomes a code block;
- a class made a dataclass by one of the ``dataclass_decorators`` named in the options is
  treated as a ``@dataclass`` (see :class:`RstDocstrings`);
- a literal block introduced by ``text::`` keeps its indented body as a code block (the
  ``::`` becomes ``:``; ``Example::`` becomes a Google ``Examples:`` section) and
  ``.. code-block:: LANG`` lines are dropped (their indented body is the code block).
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Class, Decorator, ExprName, Extension, Object

ROLE = re.compile(r":(func|class|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
EXAMPLE = re.compile(r"^(\s*)Examples?::\s*$")
LITERAL = re.compile(r"^(.*\S)?::\s*$")
DIRECTIVE = re.compile(r"^(\s*)\.\. ([a-z-]+)::(.*)$")
TABLE_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")
PARAM_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Attributes|Other Parameters):\s*$")
GROUPED = re.compile(r"^(\s*)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)(\s*\([^)]*\))?:(\s.*|)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index just past the block of lines after ``start`` indented deeper than ``indent``."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _rewrite_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line)
        if directive and directive.group(2) == "math":
            indent = len(directive.group(1))
            end = _block_end(lines, i, indent)
            body = [ln.strip() for ln in lines[i + 1 : end] if ln.strip()]
            if directive.group(3).strip():
                body.insert(0, directive.group(3).strip())
            pad = " " * indent
            if not directive.group(3).strip() and i + 1 < end and not lines[i + 1].strip():
                # Same number of lines, so that griffe's line numbers stay those of the file.
                out += ["", pad + "$$", *(pad + ln for ln in body[:-1]), pad + body[-1] + " $$"]
                out += [""] * (end - i - 2 - len(body))
            else:
                out += ["", pad + "$$", *(pad + ln for ln in body), pad + "$$", ""]
            i = end
            continue
        if directive and directive.group(2) in ("code-block", "code"):
            out.append("")
            i += 1
            continue
        if line.startswith(">>>") and (i == 0 or not lines[i - 1].strip()):
            # A doctest block outside any section: an indented code block.
            while i < len(lines) and lines[i].strip():
                out.append("    " + lines[i])
                i += 1
            continue
        table = _simple_table(lines, i) if TABLE_BORDER.match(line) else None
        if table:
            out += table[0]
            i = table[1]
            continue
        example = EXAMPLE.match(line)
        if example:
            out.append(f"{example.group(1)}Examples:")
        elif LITERAL.match(line) and not directive:
            prefix = LITERAL.match(line).group(1)
            out.append(f"{prefix}:" if prefix else "")
        else:
            out.append(line)
        i += 1
    return "\n".join(out)


def _simple_table(lines: list[str], start: int) -> tuple[list[str], int] | None:
    """The Markdown form of the simple table whose top border is ``lines[start]``, and the
    index past its bottom border (``None`` when the lines there are not such a table)."""
    border = lines[start]
    borders = [i for i in range(start, len(lines)) if lines[i].rstrip() == border.rstrip()]
    if len(borders) < 3 or borders[1] == start + 1:
        return None
    spans = [m.span() for m in re.finditer(r"=+", border)]
    pad = border[: len(border) - len(border.lstrip())]

    def cells(line: str) -> list[str]:
        bounds = [a for a, _ in spans[1:]] + [None]
        return [line[a:b].strip() for (a, _), b in zip(spans, bounds)]

    rows: list[list[str]] = []
    for i in [*range(start + 1, borders[1]), *range(borders[1] + 1, borders[2])]:
        if not lines[i].strip():
            continue
        row = cells(lines[i])
        if not row[0] and i > borders[1] + 1:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row)]
        else:
            rows.append(row)
    header, *body = ([c.replace("|", "\\|") for c in row] for row in rows)
    table = [pad + "| " + " | ".join(header) + " |", pad + "|" + "---|" * len(header)]
    table += [pad + "| " + " | ".join(row) + " |" for row in body]
    end = borders[2] + 1
    return table + [""] * (end - start - len(table)), end


def _merge_grouped_params(text: str) -> str:
    lines = text.split("\n")
    section: int | None = None  # indentation of the current parameter section header
    for i, line in enumerate(lines):
        if line.strip() and section is not None and _indent(line) <= section:
            section = None
        header = PARAM_SECTION.match(line)
        if header:
            section = len(header.group(1))
        grouped = GROUPED.match(line) if section is not None else None
        if grouped:
            first, *others = (name.strip() for name in grouped.group(2).split(","))
            also = ", ".join(f"``{name}``" for name in others)
            lines[i] = (
                f"{grouped.group(1)}{first}{grouped.group(3) or ''}: (and {also}){grouped.group(4)}"
            )
    return "\n".join(lines)


def _resolve(obj: Object, name: str) -> str:
    """Full path of ``name`` seen from ``obj`` (``name`` itself when it cannot be resolved)."""
    head, _, rest = name.partition(".")
    if head == "bregnn" or head == "torch":
        return name
    scope: Any = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except Exception:  # any failure: the name is shown as code, unlinked
            scope = scope.parent
            continue
        return f"{path}.{rest}" if rest else path
    return name


def rewrite(obj: Object, text: str) -> str:
    """The Markdown form of the docstring ``text`` of ``obj``."""
    text = _merge_grouped_params(_rewrite_blocks(text))
    text = MATH_ROLE.sub(lambda m: f"\\({m.group(1)}\\)", text)

    def crossref(match: re.Match[str]) -> str:
        short, name = match.group(2), match.group(3).strip()
        explicit = re.fullmatch(r"(.*\S)\s*<([^<>]+)>", name)  # :func:`title <target>`
        if explicit:
            name = explicit.group(2)
        name = name.removesuffix("()").lstrip(".")
        title = explicit.group(1) if explicit else name.rsplit(".", 1)[-1] if short else name
        identifier = html.escape(_resolve(obj, name), quote=True)
        return f'<autoref identifier="{identifier}" optional><code>{html.escape(title)}</code></autoref>'

    return ROLE.sub(crossref, text)


class RstDocstrings(Extension):
    """Rewrite reStructuredText roles and directives in every docstring into Markdown.

    Args:
        dataclass_decorators: paths of decorators that turn a class into a dataclass (as
            ``dataclasses.dataclass`` does): griffe then builds the class's ``__init__``
            from its fields, so an ``Args:`` section documenting them matches a signature.
    """

    def __init__(self, dataclass_decorators: list[str] | None = None) -> None:
        super().__init__()
        self.dataclass_decorators = set(dataclass_decorators or ())

    def on_class_instance(self, *, cls: Class, **kwargs: Any) -> None:
        paths = set()
        for decorator in cls.decorators:
            try:
                paths.add(decorator.callable_path)
            except Exception:  # an unresolvable decorator is simply not one of ours
                continue
        if paths & self.dataclass_decorators and "dataclasses.dataclass" not in paths:
            value = ExprName("dataclass", parent="dataclasses")
            cls.decorators.append(Decorator(value, lineno=cls.lineno, endlineno=cls.lineno))

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
