"""Reading a user's YAML file so that whatever it holds ends in a clear error, in well under a second.

:func:`read_yaml` rejects, each with a :class:`~tuner.core.errors.ConfigError` naming the file and
where in it: a file over :data:`MAX_BYTES` (a search space is a few kilobytes), bytes that are not
UTF-8 (the line and column of the first bad byte), a NUL or other control character (a binary file),
nesting deeper than :data:`MAX_DEPTH`, YAML syntax errors (line and column), and a key written twice
in one mapping (YAML's "last one wins" would silently drop the first).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tuner.core.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (the depth is checked on the text)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` - keys after it override the merged ones on purpose
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key (a list): the constructor reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise _Problem(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is already set on line {first}"
                )
        return super().construct_mapping(node, deep=deep)


class _Problem(Exception):
    pass


def read_yaml(path: str | Path, *, what: str = "file") -> Any:
    """Parse ``path``; see the module docstring for what is refused."""
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(
                f"{size:,} bytes: a {what} is a few kilobytes (at most {MAX_BYTES:,})", source=source
            )
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(f"no such {what}", source=source) from e
    except IsADirectoryError as e:
        raise ConfigError(f"a directory, not a {what}", source=source) from e
    except OSError as e:
        raise ConfigError(f"cannot read the {what}: {e.strerror or e}", source=source) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            f"line {line}, column {column}: not UTF-8 (byte 0x{data[e.start]:02x}); save the {what} as UTF-8",
            source=source,
        ) from None
    text = text.removeprefix("\ufeff")
    if bad := _CONTROL.search(text):
        line = text.count("\n", 0, bad.start()) + 1
        raise ConfigError(
            f"line {line}: control character {bad.group()!r} - a binary file, not a {what}", source=source
        )
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise ConfigError(f"nested {depth} levels deep (at most {MAX_DEPTH})", source=source)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _Problem as e:
        raise ConfigError(str(e), source=source) from None
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_problem(e), source=source) from None
    except RecursionError:
        raise ConfigError(f"nested too deep (at most {MAX_DEPTH} levels)", source=source) from None


def _max_depth(text: str) -> int:
    """An upper estimate of the nesting: open flow brackets, or indentation steps of block lines."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    indents = {len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.strip()}
    return max(deepest, len(indents))


def _yaml_problem(e: yaml.YAMLError) -> str:
    """``line L, column C: not valid YAML (problem)``; where the parser only noticed the mistake lines
    after it (an unclosed bracket or quote), the line where that construct began comes first."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None and (mark is None or start.line != mark.line):
        noticed = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return (f"line {start.line + 1}, column {start.column + 1}: not valid YAML ({problem}{noticed}, "
                f"{context} that starts here)")  # fmt: skip
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}not valid YAML ({problem})"
