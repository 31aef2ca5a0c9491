"""Data files a workload reads: ShareGPT-format conversations and request traces.

Read when the space is loaded (:func:`check_dataset`), so a bad file is an error naming the file and
the line (JSONL) or the entry (a JSON array) before any server starts, and again by the load
generator (``tuner.loadgen.prompts``), which turns the surviving turns into requests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.core.errors import ConfigError
from tuner.space.workload import MAX_TOKENS, ShareGPTDataset, TraceDataset, WorkloadSpec

MAX_FILE_BYTES = 2 * 1024**3  # a dataset larger than this is not a benchmark's (ShareGPT V3: ~650 MB)
_HUMAN = ("human", "user")
_MODEL = ("gpt", "assistant", "chatgpt", "bard", "model")


@dataclass(frozen=True)
class DatasetRequest:
    """One request a dataset yields: the prompt text, its length in words and the answer's."""

    text: str
    prompt_words: int
    output_len: int
    conversation: int = 0  # the conversation's place in the file


def read_sharegpt(path: str | Path) -> list[list[tuple[str, str]]]:
    """The conversations of a ShareGPT-format file as lists of (human turn, reply) pairs.

    A JSON array or one JSON object a line; each object holds ``conversations`` (or ``conversation``),
    a list of ``{"from": ..., "value": ...}``. Turns pair up in order (a human turn, then the model's
    reply); a conversation that does not start with a human turn starts at its first one, an unanswered
    last turn is dropped. Raises ConfigError naming the file and the line or entry.
    """
    path = Path(path)
    text = read_data_file(path, "dataset file")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"not valid JSON ({e.msg})", source=f"{path}:{e.lineno}") from None
        entries = [(f"{path}: entry {i}", obj) for i, obj in enumerate(data)]
    else:
        entries = jsonl_objects(path, text, hint="write a JSON array or one JSON object a line")
    if not entries:
        raise ConfigError("dataset file holds no conversations", source=str(path))
    return [_pairs(obj, where) for where, obj in entries]


def read_data_file(path: Path, what: str) -> str:
    """A data file's text (at most 2 GiB); ConfigError naming the file when it cannot be read or is not UTF-8."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{what} is {size / 1024**3:.1f} GiB; the limit is 2 GiB", source=str(path))
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {what} ({e.strerror}); check the path", source=str(path)) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} is not UTF-8 text (byte {e.start})", source=str(path)) from e


def jsonl_objects(
    path: Path, text: str, *, hint: str = "write one JSON object a line"
) -> list[tuple[str, Any]]:
    """``(path:line, value)`` of each non-blank line; ConfigError naming the line of the first that is
    not JSON."""
    out: list[tuple[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ConfigError(f"not valid JSON ({e.msg}); {hint}", source=f"{path}:{lineno}") from None
    return out


def _pairs(obj: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(obj, dict):
        raise ConfigError(
            'each conversation must be a JSON object like {"conversations": [...]}', source=where
        )
    turns = obj.get("conversations", obj.get("conversation"))
    if not isinstance(turns, list):
        raise ConfigError(
            'needs a list of {"from": ..., "value": ...} turns', source=where, field="conversations"
        )
    pairs: list[tuple[str, str]] = []
    human: str | None = None
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ConfigError(
                'each turn must be an object with a string "value"', source=where, field=f"conversations[{k}]"
            )
        role = str(turn.get("from", turn.get("role", ""))).lower()
        if role in _HUMAN:
            human = turn["value"]
        elif role in _MODEL:
            if human is not None:
                pairs.append((human, turn["value"]))
            human = None
        elif role not in ("system", "tool", "function"):
            raise ConfigError(
                f"unknown speaker {turn.get('from')!r}; expected human/user or gpt/assistant",
                source=where,
                field=f"conversations[{k}].from",
            )
    return pairs


def sharegpt_requests(spec: ShareGPTDataset, counter: TokenCounter | None = None) -> list[DatasetRequest]:
    """The requests ``spec`` yields from its file, after bench_serving's length filters, in file order;
    lengths in words, or in ``counter``'s tokens."""
    length = counter.count if counter is not None else (lambda text: len(text.split()))
    out: list[DatasetRequest] = []
    for c, pairs in enumerate(read_sharegpt(spec.path)):
        history: list[str] = []
        for k, (human, reply) in enumerate(pairs):
            if spec.turns == "first" and k > 0:
                break
            text = "\n".join([*history, human])
            history += [human, reply]
            prompt_words = length(text)
            reply_words = length(reply)
            output_len = spec.output_len or reply_words
            if prompt_words < spec.min_len or reply_words < spec.min_len:
                continue
            if prompt_words > spec.max_prompt_len or prompt_words + output_len > spec.max_total_len:
                continue
            out.append(DatasetRequest(text, prompt_words, output_len, c))
    return out


@dataclass(frozen=True)
class TraceRequest:
    """One line of a trace: when (seconds after its first request), how long in and out, its blocks."""

    at_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def read_trace(path: str | Path) -> list[TraceRequest]:
    """A JSONL trace in time order; ConfigError naming the file and line of the first bad one."""
    path = Path(path)
    out: list[TraceRequest] = []
    first: float | None = None
    for where, obj in jsonl_objects(path, read_data_file(path, "trace file")):
        if not isinstance(obj, dict):
            raise ConfigError(
                'each line must be an object like {"timestamp": 0, "input_length": 512, ...}', source=where
            )
        for key in ("timestamp", "input_length", "output_length"):
            v = obj.get(key)
            if key == "timestamp":
                ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < float("inf")
            else:
                ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_TOKENS
            if not ok:
                want = "a number of milliseconds >= 0" if key == "timestamp" else "a positive integer"
                raise ConfigError(f"must be {want}, got {v!r}", source=where, field=key)
        ids = obj.get("hash_ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ConfigError(f"must be a list of integers, got {ids!r}", source=where, field="hash_ids")
        at = obj["timestamp"] / 1000.0
        first = at if first is None else first
        if out and at < first + out[-1].at_s:
            raise ConfigError(
                "timestamps must not decrease (sort the trace by time)", source=where, field="timestamp"
            )
        out.append(TraceRequest(at - first, obj["input_length"], obj["output_length"], tuple(ids)))
    if not out:
        raise ConfigError("trace file holds no requests", source=str(path))
    return out


class TokenCounter:
    """A model's tokenizer (``tokenizer.json`` through the ``tokenizers`` package): exact lengths."""

    def __init__(self, path: str | Path) -> None:
        file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(
                "exact token lengths need the tokenizers package: pip install 'sglang-tuner[tokenizer]'",
                field="workload.tokenizer",
            ) from None
        try:
            self.tokenizer = Tokenizer.from_file(str(file))
        except Exception as e:  # the library's own errors (missing file, bad JSON) vary
            raise ConfigError(
                f"cannot load {file} as a tokenizer ({str(e)[:200]})", field="workload.tokenizer"
            ) from None

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count(self, text: str) -> int:
        return len(self.ids(text))

    def exact(self, text: str, n: int, more: Callable[[], str]) -> str:
        """``text`` cut (or extended with ``more()``) to exactly ``n`` tokens, as text."""
        ids = self.ids(text)
        while len(ids) < n:
            ids = self.ids(f"{self.tokenizer.decode(ids)} {more()}")
        out = str(self.tokenizer.decode(ids[:n]))
        for _ in range(4):  # decoding and encoding again can merge or split a token at the cut
            got = self.ids(out)
            if len(got) == n:
                break
            if len(got) < n:
                got = self.ids(f"{out} {more()}")
            out = str(self.tokenizer.decode(got[:n]))
        return out


def check_dataset(workload: WorkloadSpec, *, source: str) -> None:
    """Read the workload's dataset once: its errors name the file; no request left is an error too."""
    if workload.tokenizer is not None:
        try:
            TokenCounter(workload.tokenizer)
        except ConfigError as e:
            raise ConfigError(e.message, source=source, field=e.field) from None
    spec = workload.dataset
    try:
        if isinstance(spec, TraceDataset):
            read_trace(spec.path)
            return
        if not isinstance(spec, ShareGPTDataset):
            return
        requests = sharegpt_requests(spec)
    except ConfigError as e:  # the space file and its field first, then the data file's own place
        raise ConfigError(str(e), source=source, field="workload.dataset") from None
    if not requests:
        raise ConfigError(
            f"{spec.path}: no {'first ' if spec.turns == 'first' else ''}turn within the length limits "
            f"(prompt and reply >= {spec.min_len} words, prompt <= {spec.max_prompt_len}, prompt + reply "
            f"<= {spec.max_total_len})",
            source=source,
            field="workload.dataset",
        )
