"""Mutated search-space files: a seeded corpus of hostile input for the loader and the CLI.

Each mutant starts from a shipped space file and applies one to three edits of the kinds users and
their tools produce: a value of the wrong type or range (0, negative, NaN, infinities, 1e308, 1e-300,
huge integers, empty strings, lists, mappings, null), a deleted or renamed key, a duplicated key, a
misspelt top-level key, absurd sizes (warm-start products, repeats, request counts), hostile names
(absolute paths, ``..``, NUL), IPv6 and invalid hosts, constraint expressions that can never evaluate,
and damage to the file itself (not UTF-8, binary, deeply nested, truncated, very large).

``corpus(n, seed)`` yields ``(label, bytes)``; the same seed gives the same corpus.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASES = sorted((ROOT / "search_spaces").glob("*.yaml"))

ODD_VALUES: tuple[Any, ...] = (
    0, -1, -0.5, 1.2, 10, 1e308, -1e308, 1e-300, float("nan"), float("inf"), float("-inf"),
    2**70, "", "x", "0.5", True, False, None, [], [1, 2], {}, {"a": 1}, "\u0000", "../../escape",
    "/tmp/abs", "::1", "not a host!", 1e12, 276480, "--mem-fraction-static", "--",
)  # fmt: skip
HOSTILE_EXPRS = ("'a' < 1", "True", "1/0", "__import__('os')", "x +", "quantization ==", "[] < {}")


def corpus(n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` mutants, about one in eight damaging the file itself, the rest its fields."""
    rng = random.Random(seed)
    texts = {p.name: p.read_text(encoding="utf-8") for p in BASES}
    docs = {name: yaml.safe_load(text) for name, text in texts.items()}
    for i in range(n):
        base = rng.choice(sorted(docs))
        if rng.random() < 0.125:
            label, data = _damage(texts[base], rng)
            yield f"{i}:{base}:{label}", data
            continue
        doc = copy.deepcopy(docs[base])
        labels = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            try:
                labels.append(_edit(doc, rng))
            except (KeyError, TypeError, AttributeError, IndexError):  # an earlier edit removed the spot
                labels.append("-")
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        if rng.random() < 0.05:  # a key written twice (the last one would silently win)
            first = text.splitlines()[0]
            text = f"{first}\n{text}"
            labels.append("duplicate key")
        yield f"{i}:{base}:{'; '.join(labels)}", text.encode("utf-8", "surrogatepass")


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _get_parent(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node


def _edit(doc: dict[str, Any], rng: random.Random) -> str:
    kind = rng.choices(
        ("value", "delete", "rename", "top-typo", "size", "name", "host", "expr", "step"),
        weights=(10, 3, 2, 1, 2, 1, 1, 1, 2),
    )[0]
    paths = list(_paths(doc))
    if kind == "size":
        target = rng.choice(("warm_start", "confirm", "num_requests", "noise"))
        if target == "warm_start":
            doc["warm_start"] = [{p: list(range(rng.choice((40, 400)))) for p in list(doc["parameters"])[:3]}]
        elif target == "confirm":
            doc["confirm"] = {"top_k": rng.choice((2, 10**6)), "repeats": rng.choice((10**9, 3))}
        elif target == "num_requests":
            doc["workload"]["num_requests"] = rng.choice((10**12, 0, -3))
        else:
            doc.setdefault("target", {})["noise"] = rng.choice((1e308, -1.0, float("nan")))
        return f"size {target}"
    if kind == "name":
        doc["name"] = rng.choice(("/tmp/abs-name", "../../escape", "a\u0000b", "", "x" * 5000, "ok/sub"))
        return f"name {doc['name'][:20]!r}"
    if kind == "host":
        doc.setdefault("launch", {})["host"] = rng.choice(("::1", "[::1]", "not a host!", "", "256.1.1.1"))
        return f"host {doc['launch']['host']!r}"
    if kind == "expr":
        doc.setdefault("constraints", []).append(
            rng.choice(({"name": "c", "expr": rng.choice(HOSTILE_EXPRS)}, {"name": "empty"}))
        )
        return "expr"
    if kind == "step":
        params = doc["parameters"]
        floats = [n for n, p in params.items() if isinstance(p, dict) and p.get("type") in ("float", "int")]
        if floats:
            name = rng.choice(floats)
            key = rng.choice(("step", "low", "high"))
            params[name][key] = rng.choice((0, -0.1, float("nan"), float("-inf"), 1e-300, 10**9))
            return f"{name}.{key}"
    if kind == "top-typo":
        key = rng.choice([k for k in doc if isinstance(k, str)])
        doc[key[:-1] + key[-1] * 2] = doc.pop(key)
        return f"typo {key}"
    path = rng.choice(paths)
    parent = _get_parent(doc, path)
    if kind == "delete":
        del parent[path[-1]]
        return f"delete {'.'.join(map(str, path))}"
    if kind == "rename" and isinstance(parent, dict):
        parent[f"{path[-1]}_x"] = parent.pop(path[-1])
        return f"rename {'.'.join(map(str, path))}"
    value = rng.choice(ODD_VALUES)
    parent[path[-1]] = value
    return f"{'.'.join(map(str, path))}={value!r}"[:80]


def _damage(text: str, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(("latin1", "binary", "deep", "truncate", "large", "deep-flow", "bom-utf16", "tab"))
    if kind == "latin1":
        return kind, text.replace("a", "\xe9", 3).encode("latin-1", "replace")
    if kind == "binary":
        return kind, bytes(rng.randrange(256) for _ in range(2048))
    if kind == "deep":
        depth = rng.choice((200, 5000, 50000))
        return kind, ("a:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(min(depth, 400)))).encode() + (
            b"[" * depth + b"]" * depth
        )
    if kind == "deep-flow":
        return kind, b"name: " + b"[" * 100000 + b"]" * 100000
    if kind == "truncate":
        return kind, text[: rng.randrange(1, len(text))].encode()
    if kind == "large":
        return kind, (text + "\n# " + "x" * 80 + "\n").encode() * 400
    if kind == "bom-utf16":
        return kind, text.encode("utf-16")
    return kind, text.replace("  ", "\t", 5).encode()
