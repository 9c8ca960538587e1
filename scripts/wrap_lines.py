#!/usr/bin/env python3
"""Wrap code at 88 columns, touching only the statements that have a longer line.

    python scripts/wrap_lines.py chapters/05_attention_only.ipynb lib/model.py ...

For notebooks, every code cell is wrapped. A statement with a long line is reformatted
by yapf (only its lines); what is still too long (long strings) by black, statement by
statement; long comments and docstring lines are re-flowed. A file or cell whose syntax
tree would change (docstring white space aside) is left as it was, and so is a cell that
does not parse (IPython magics). Prints what it changed and every line still too long;
tests/test_line_length.py checks the result.
"""
from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path

LIMIT = 88
#: A docstring line that starts an item ("name: ...", "- ...", ">>> ..."): not joined.
ITEM = re.compile(r"^\s*([\w.*]+\s*:|[-*+] |\d+[.)] |>>>|\.\. |``|\|)")
YAPF_STYLE = (
    "{based_on_style: pep8, column_limit: 88, split_before_named_assigns: false, "
    "allow_split_before_dict_value: false, coalesce_brackets: true, "
    "dedent_closing_brackets: false, split_before_logical_operator: true, "
    "split_penalty_arithmetic_operator: 5000, split_before_arithmetic_operator: true}")
_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _too_long(src: str) -> bool:
    return any(len(line) > LIMIT for line in src.splitlines())


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _docstring(node) -> ast.Constant | None:
    body = getattr(node, "body", None)
    if (isinstance(node, _SCOPES) and body and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        return body[0].value
    return None


def _units(tree: ast.AST) -> list[tuple[int, int, str]]:
    """(first line, last line, kind) of simple statements, compound headers,
    decorators."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        for dec in getattr(node, "decorator_list", None) or []:
            out.append((dec.lineno, dec.end_lineno, "decorator"))
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and body[0].lineno > node.lineno:
            out.append((node.lineno, body[0].lineno - 1, "header"))
        else:
            out.append((node.lineno, node.end_lineno, "statement"))
    return out


def _unit_of(units, line: int):
    inside = [u for u in units if u[0] <= line <= u[1]]
    return min(inside, key=lambda u: u[1] - u[0]) if inside else None


def _yapf(src: str, tree: ast.AST) -> str:
    from yapf.yapflib.yapf_api import FormatCode

    units = _units(tree)
    ranges = []
    for i, line in enumerate(src.split("\n"), start=1):
        unit = _unit_of(units, i) if len(line) > LIMIT else None
        if unit:
            ranges.append((unit[0], unit[0] if unit[2] == "header" else unit[1]))
    if not ranges:
        return src
    try:
        out, _ = FormatCode(src, style_config=YAPF_STYLE, lines=ranges)
    except Exception:  # yapf cannot format it: leave it to black
        return src
    return out.rstrip("\n") + ("\n" if src.endswith("\n") else "")


def _black(snippet: str, width: int) -> str | None:
    import black
    from black.mode import Preview

    modes = [
        black.Mode(line_length=max(width, 40), string_normalization=False, preview=True,
                   enabled_features={Preview.string_processing}),
        black.Mode(line_length=max(width, 40), string_normalization=False)
    ]
    for mode in modes:
        try:
            return black.format_str(snippet, mode=mode)
        except Exception:  # e.g. a fragment black cannot parse on its own
            continue
    return None


def _black_statements(src: str, tree: ast.AST) -> str:
    lines = src.split("\n")
    units, docs = _units(tree), _docstring_lines(tree)
    todo = {_unit_of(units, i) for i, line in enumerate(lines, start=1)
            if len(line) > LIMIT and i not in docs} - {None}
    for start, end, kind in sorted(todo, reverse=True):
        block = lines[start - 1:end]
        if kind == "header":  # up to the line that ends with ':'
            while len(block) > 1 and not block[-1].split("#")[0].rstrip().endswith(":"):
                block.pop()
            end = start + len(block) - 1
        indent = _indent_of(block[0])
        if not all(b.startswith(indent) or not b.strip() for b in block):
            continue
        tail = {
            "decorator": ["def _f():", "    pass"],
            "header": ["    pass"]
        }.get(kind, [])
        out = _black("\n".join([textwrap.dedent("\n".join(block)), *tail]) + "\n",
                     LIMIT - len(indent))
        new = out.rstrip("\n").split("\n") if out else []
        if not new or (tail and new[-len(tail):] != tail):
            continue
        new = new[: len(new) - len(tail)]
        lines[start - 1:end] = [indent + x if x.strip() else "" for x in new]
    return "\n".join(lines)


def _docstring_lines(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        doc = _docstring(node)
        if doc is not None:
            out.update(range(doc.lineno, doc.end_lineno + 1))
    return out


def _comments_and_docstrings(src: str, tree: ast.AST) -> str:
    docs, own_line, trailing = _docstring_lines(tree), set(), {}
    lines = src.split("\n")
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                if lines[row - 1][:col].strip():
                    trailing[row] = col
                else:
                    own_line.add(row)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return src
    out = []
    for i, line in enumerate(lines, start=1):
        indent = _indent_of(line)
        wrap = dict(width=LIMIT - len(indent) - 2, initial_indent=indent + "# ",
                    subsequent_indent=indent + "# ", break_long_words=False,
                    break_on_hyphens=False)
        if len(line) <= LIMIT:
            out.append(line)
        elif i in own_line and re.fullmatch(r"#\s*([-=#*~])\1{20,}", line.strip()):
            out.append(line[:LIMIT])  # a rule: shorter
        elif i in own_line:
            out += textwrap.wrap(line.strip().lstrip("#").strip(), **wrap)
        elif i in trailing:  # the comment goes above its line
            out += textwrap.wrap(line[trailing[i]:].lstrip("#").strip(), **wrap)
            out.append(line[:trailing[i]].rstrip())
        elif i in docs:
            parts = textwrap.wrap(line.strip(), LIMIT - len(indent),
                                  initial_indent=indent, subsequent_indent=indent,
                                  break_long_words=False, break_on_hyphens=False)
            after = lines[i] if i < len(lines) else ""
            if (len(parts) > 1 and i + 1 in docs and after.strip()
                    and _indent_of(after) == indent and not ITEM.match(after)
                    and not after.strip().startswith(('"""', "'''"))):
                lines[
                    i] = f"{indent}{parts.pop().strip()} {after.strip()}"  # carry over
            out += parts
        else:
            out.append(line)
    return "\n".join(out)


def _meaning(src: str) -> str:
    """The syntax tree, with docstring white space and f-string pieces normalised."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        doc = _docstring(node)
        if doc is not None:
            doc.value = " ".join(doc.value.split())
        if isinstance(node, ast.JoinedStr):
            values = []
            for v in node.values:
                if values and isinstance(v, ast.Constant) and isinstance(
                        values[-1], ast.Constant):
                    values[-1] = ast.Constant(values[-1].value + v.value)
                else:
                    values.append(v)
            node.values = values
    return ast.dump(tree)


def wrap_source(src: str) -> str:
    """``src`` with its long lines wrapped; ``src`` itself if that would change its
    meaning."""
    if not _too_long(src):
        return src
    try:
        before = _meaning(src)
        new = src
        for step in (_yapf, _black_statements, _comments_and_docstrings):
            if _too_long(new):
                new = step(new, ast.parse(new))
        return new if _meaning(new) == before else src
    except SyntaxError:  # IPython magics, or a step that broke the syntax
        return src


def wrap_file(path: Path) -> list[str]:
    """Wrap ``path`` (.py or .ipynb) in place; return the lines still too long."""
    if path.suffix == ".ipynb":
        import nbformat

        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "code"]
        new = [wrap_source(c.source) for c in cells]
        if any(n != c.source for n, c in zip(new, cells)):
            for cell, source in zip(cells, new):
                cell.source = source
            nbformat.write(nb, path)
        texts = [(f"{path} cell {k}", c.source) for k, c in enumerate(cells)]
    else:
        src = path.read_text(encoding="utf-8")
        new = wrap_source(src)
        if new != src:
            path.write_text(new, encoding="utf-8")
        texts = [(str(path), new)]
    return [f"{where}, line {i}: {len(line)} characters"
            for where, text in texts for i, line in enumerate(text.split("\n"), start=1)
            if len(line) > LIMIT]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help=".py and .ipynb files")
    args = parser.parse_args(argv)
    left = [line for path in args.paths for line in wrap_file(path)]
    for line in left:
        print(f"still too long: {line}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
