"""Prompts for a workload: synthetic random words (or token ids), a JSONL file, ShareGPT conversations,
words behind shared system prompts, or a request trace's lengths and shared blocks.

Synthetic prompts need no download and no tokenizer, like SGLang's ``random-ids`` dataset: a
prompt of N tokens is N common English words separated by spaces. The simulator counts one
token per word; real BPE tokenizers give close to one token per such word. Everything is drawn
from one ``random.Random(seed)``, so the same workload gives the same prompts in the same order.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuner.core.errors import ConfigError
from tuner.space.datasets import (
    DatasetRequest,
    TokenCounter,
    jsonl_objects,
    read_data_file,
    read_trace,
    sharegpt_requests,
)
from tuner.space.workload import (
    LengthDist,
    SessionsArrival,
    SharedPrefixDataset,
    ShareGPTDataset,
    TraceDataset,
    WorkloadSpec,
)

# Short, common words: each is a single token in the usual BPE vocabularies.
_WORD_TEXT = """the of and to in is you that it he was for on are as with his they at be this have from or one
    had by word but not what all were we when your can said there use an each which she do how their
    if will up other about out many then them these so some her would make like him into time has look
    two more write go see number no way could people my than first water been call who oil its now find
    long down day did get come made may part over new sound take only little work know place year live
    me back give most very after thing our just name good sentence man think say great where help
    through much before line right too mean old any same tell boy follow came want show also around
    form three small set put end does another well large must big even such because turn here why ask
    went men read need land different home us move try kind hand picture again change off play spell
    air away animal house point page letter mother answer found study still learn should world high
    every near add food between own below country plant last school father keep tree never start city
    earth eye light thought head under story saw left few while along might close something seem next
    hard open example begin life always those both paper together got group often run"""
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Prompt:
    """One request's input. Exactly one of ``text`` and ``input_ids`` is set.

    ``prompt_tokens`` is the intended length (words or ids); the client replaces it with the
    server's own count when the server reports one.
    """

    text: str | None
    input_ids: tuple[int, ...] | None
    prompt_tokens: int
    output_len: int
    at_s: float | None = None  # a trace's send time, seconds after its first request (None: no trace)
    session: int | None = None  # the conversation a multi-turn turn belongs to (None: independent)


def draw_length(spec: int | LengthDist, rng: random.Random) -> int:
    """Draw one length (at least 1) from a fixed int or a :class:`LengthDist`."""
    if isinstance(spec, int):
        return spec
    if spec.dist == "fixed":
        assert spec.mean is not None
        return max(1, round(spec.mean))
    if spec.dist == "uniform":
        assert spec.low is not None and spec.high is not None
        return rng.randint(spec.low, spec.high)
    assert spec.mean is not None and spec.std is not None
    value = round(rng.gauss(spec.mean, spec.std))
    low = spec.low if spec.low is not None else 1
    high = spec.high if spec.high is not None else max(value, low)
    return min(max(value, low), high)


def load_prompts_file(path: str | Path) -> list[tuple[str, int | None]]:
    """Read a JSONL prompts file: one ``{"prompt": str, "output_len": int?}`` object a line.

    Blank lines are skipped. Raises ConfigError naming the file and line of the first bad entry.
    """
    path = Path(path)
    entries: list[tuple[str, int | None]] = []
    for where, obj in jsonl_objects(path, read_data_file(path, "prompts file")):
        if not isinstance(obj, dict):
            raise ConfigError('each line must be a JSON object like {"prompt": "..."}', source=where)
        unknown = sorted(set(obj) - {"prompt", "output_len"})
        if unknown:
            keys = ", ".join(unknown)
            raise ConfigError(f"unknown key(s) {keys}; allowed: prompt, output_len", source=where)
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("needs a non-empty string", source=where, field="prompt")
        output_len = obj.get("output_len")
        if output_len is not None and (
            not isinstance(output_len, int) or isinstance(output_len, bool) or output_len < 1
        ):
            msg = f"must be a positive integer, got {output_len!r}"
            raise ConfigError(msg, source=where, field="output_len")
        entries.append((prompt, output_len))
    if not entries:
        raise ConfigError("prompts file holds no prompts", source=str(path))
    return entries


def make_prompts(workload: WorkloadSpec) -> Iterator[Prompt]:
    """Yield the workload's prompts, endlessly and deterministically (warm-up ones first).

    A prompts file is cycled in file order; its entries without ``output_len`` take one drawn
    from ``workload.output_len``.
    """
    rng = random.Random(workload.seed)
    counter = TokenCounter(workload.tokenizer) if workload.tokenizer is not None else None
    if isinstance(workload.dataset, ShareGPTDataset):
        requests = sharegpt_requests(workload.dataset, counter)
        if isinstance(workload.arrival, SessionsArrival):
            yield from _sessions(requests, rng)
            return
        rng.shuffle(requests)  # bench_serving samples the file at random; the seed fixes the order
        for r in itertools.cycle(requests):
            yield Prompt(text=r.text, input_ids=None, prompt_tokens=r.prompt_words, output_len=r.output_len)
        return
    if isinstance(workload.dataset, SharedPrefixDataset):
        yield from _shared_prefix(workload, workload.dataset, rng, counter)
        return
    if isinstance(workload.dataset, TraceDataset):
        yield from _trace(workload, workload.dataset, rng, counter)
        return
    if workload.prompts_file is not None:
        entries = load_prompts_file(workload.prompts_file)
        for text, output_len in itertools.cycle(entries):
            out = output_len if output_len is not None else draw_length(workload.output_len, rng)
            yield Prompt(text=text, input_ids=None, prompt_tokens=len(text.split()), output_len=out)
        return
    while True:
        n_in = draw_length(workload.input_len, rng)
        n_out = draw_length(workload.output_len, rng)
        if workload.random_ids_vocab is not None:
            ids = tuple(rng.randrange(workload.random_ids_vocab) for _ in range(n_in))
            yield Prompt(text=None, input_ids=ids, prompt_tokens=n_in, output_len=n_out)
        else:
            text = _words(rng, n_in, counter)
            yield Prompt(text=text, input_ids=None, prompt_tokens=n_in, output_len=n_out)


def _words(rng: random.Random, n: int, counter: TokenCounter | None) -> str:
    """``n`` words, or with a tokenizer words cut to exactly ``n`` of its tokens."""
    text = " ".join(rng.choices(WORDS, k=n))
    if counter is None:
        return text
    return counter.exact(text, n, lambda: " ".join(rng.choices(WORDS, k=max(8, n // 4))))


def _shared_prefix(
    workload: WorkloadSpec, spec: SharedPrefixDataset, rng: random.Random, counter: TokenCounter | None
) -> Iterator[Prompt]:
    """``spec.groups`` system prompts (drawn once, from their own seed) before ``spec.share`` of the
    requests; each request's own part is ``input_len`` words as usual (tokens, with a tokenizer)."""
    prefix_rng = random.Random(f"{workload.seed}:prefixes")
    prefixes = [_words(prefix_rng, spec.prefix_len, counter) for _ in range(spec.groups)]
    while True:
        n_in = draw_length(workload.input_len, rng)
        n_out = draw_length(workload.output_len, rng)
        question = _words(rng, n_in, counter)
        if rng.random() < spec.share:
            text = f"{prefixes[rng.randrange(spec.groups)]}\n{question}"
            # the joint may tokenize differently from its parts: count the whole with a tokenizer
            n = counter.count(text) if counter is not None else spec.prefix_len + n_in
        else:
            text, n = question, n_in
        yield Prompt(text=text, input_ids=None, prompt_tokens=n, output_len=n_out)


def _trace(
    workload: WorkloadSpec, spec: TraceDataset, rng: random.Random, counter: TokenCounter | None
) -> Iterator[Prompt]:
    """The trace's requests in order, again and again, each pass after the last one ended (one mean gap
    later). A prompt is the words of its ``hash_ids`` blocks (the same id, the same words: shared
    prefixes stay shared), cut or filled with fresh words to ``input_length``."""
    requests = read_trace(spec.path)
    span = requests[-1].at_s
    period = span + (span / (len(requests) - 1) if len(requests) > 1 and span > 0 else 1.0)
    blocks: dict[int, list[str]] = {}

    def block(i: int) -> list[str]:
        if i not in blocks:
            blocks[i] = random.Random(f"{workload.seed}:block:{i}").choices(WORDS, k=spec.block_size)
        return blocks[i]

    for lap in itertools.count():
        for r in requests:
            words = [w for i in r.hash_ids for w in block(i)][: r.input_length]
            words += rng.choices(WORDS, k=r.input_length - len(words))
            text = " ".join(words)
            if counter is not None:  # the trace's lengths are tokens: cut the words to them exactly
                text = counter.exact(text, r.input_length, lambda: " ".join(rng.choices(WORDS, k=64)))
            yield Prompt(text, None, r.input_length, r.output_length, at_s=lap * period + r.at_s)


def _sessions(requests: list[DatasetRequest], rng: random.Random) -> Iterator[Prompt]:
    """Whole conversations in a shuffled order, each one's turns in its own order; every pass over the
    file numbers its sessions anew."""
    by_conversation: dict[int, list[DatasetRequest]] = {}
    for r in requests:
        by_conversation.setdefault(r.conversation, []).append(r)
    order = list(by_conversation)
    rng.shuffle(order)
    for lap in itertools.count():
        for k, c in enumerate(order):
            for r in by_conversation[c]:
                yield Prompt(r.text, None, r.prompt_words, r.output_len, session=lap * len(order) + k)
