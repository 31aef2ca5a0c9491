"""The HTTP side of the benchmark: send one streaming request, time its chunks into a RequestRecord.

Three APIs are spoken: SGLang's native ``/generate`` (SSE chunks whose ``text`` is cumulative,
``meta_info.completion_tokens`` counting the tokens so far) and the OpenAI ``/v1/completions`` and
``/v1/chat/completions`` streams (delta text, one token per chunk, a final ``usage`` chunk).
Chunks are stamped with ``time.perf_counter_ns()`` as their bytes arrive, before any parsing.
Errors (HTTP status, connection errors, timeouts, error events in the stream) are written into
the record, never raised; only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from tuner.core.records import RequestRecord
from tuner.loadgen.prompts import Prompt

_json_loads: Callable[[bytes], Any]
try:  # parsing every streamed event is the client's hottest path: orjson is ~8x faster
    import orjson

    _json_loads = orjson.loads
except ImportError:  # the standard library is the fallback
    _json_loads = json.loads

Api = Literal["generate", "completions", "chat"]

PATHS: dict[str, str] = {
    "generate": "/generate",
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}


def request_body(api: Api, prompt: Prompt, model: str | None, *, ignore_eos: bool = True) -> dict[str, Any]:
    """The JSON body for one streaming request: greedy, ``ignore_eos`` so output lengths are exact.

    ``ignore_eos=False`` leaves the field out, for servers that refuse unknown fields.
    """
    if api == "generate":
        body: dict[str, Any] = {
            "sampling_params": {"max_new_tokens": prompt.output_len, "temperature": 0},
            "stream": True,
        }
        if ignore_eos:
            body["sampling_params"]["ignore_eos"] = True
        if prompt.input_ids is not None:
            body["input_ids"] = list(prompt.input_ids)
        else:
            body["text"] = prompt.text
        return body
    body = {
        "max_tokens": prompt.output_len,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    if model is not None:
        body["model"] = model
    return body


@dataclass
class _StreamState:
    """What the chunks so far have told us about one response."""

    api: Api
    seen_text: bool = False
    completion_tokens: int | None = None  # cumulative, from meta_info or usage
    prompt_tokens: int | None = None
    server_e2e_s: float | None = None
    error: str | None = None
    last_meta: dict[str, Any] | None = None  # /generate: read once at the end, not per chunk

    def tokens_in(self, data: dict[str, Any]) -> int:
        """Output tokens the event ``data`` carries as new text (0: not a timed chunk)."""
        err = data.get("error")
        if err is not None or data.get("object") == "error":
            msg = err.get("message", err) if isinstance(err, dict) else (err or data.get("message"))
            self.error = f"error in stream: {str(msg)[:300]}"
            return 0
        if self.api == "generate":
            return self._generate(data)
        return self._openai(data)

    def _generate(self, data: dict[str, Any]) -> int:
        meta = data.get("meta_info")
        if meta:
            self.last_meta = meta
        if not data.get("text"):
            return 0
        count = meta.get("completion_tokens") if meta else None
        first = not self.seen_text
        self.seen_text = True
        if type(count) is int:
            # SGLang's bench_serving: a chunk counts when the token count grows (or it is the first).
            before = self.completion_tokens or 0
            self.completion_tokens = count
            return max(count, 1) if first else max(count - before, 0)
        return 1  # no meta_info: one token per chunk that brings text (cumulative or incremental)

    def _openai(self, data: dict[str, Any]) -> int:
        usage = data.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                self.completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                self.prompt_tokens = usage["prompt_tokens"]
        choices = data.get("choices")
        if not choices:
            return 0
        choice = choices[0]
        if self.api == "chat":
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content")
        else:
            text = choice.get("text")
        return 1 if text else 0

    def finish(self) -> None:
        """Take the server's own prompt count and latency from the last meta_info seen."""
        meta = self.last_meta
        if meta is None:
            return
        if isinstance(meta.get("prompt_tokens"), int):
            self.prompt_tokens = meta["prompt_tokens"]
        if isinstance(meta.get("e2e_latency"), int | float):
            self.server_e2e_s = float(meta["e2e_latency"])


async def send_request(
    session: aiohttp.ClientSession,
    base_url: str,
    api: Api,
    prompt: Prompt,
    record: RequestRecord,
    *,
    model: str | None = None,
    timeout_s: float,
    ignore_eos: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Send one streaming request and fill ``record`` in place (times, tokens, ok/error).

    ``record.sent_ns`` is stamped here, just before the request is written. ``on_chunk(t_ns)`` is
    called for every timed chunk (the benchmark's hang detector listens). The record is filled in
    place so that a cancelled request (stall, early stop) still leaves what it had.
    """
    url = base_url.rstrip("/") + PATHS[api]
    body = request_body(api, prompt, model, ignore_eos=ignore_eos)
    state = _StreamState(api)
    record.sent_ns = time.perf_counter_ns()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, json=body) as resp:
                record.status = resp.status
                if resp.status != 200:
                    text = (await resp.text(errors="replace"))[:300]
                    record.error = f"HTTP {resp.status}: {text.strip()}"
                    return
                await _read_stream(resp, state, record, on_chunk)
    except TimeoutError:
        record.error = f"timeout: no complete response within request_timeout_s={timeout_s:g}"
    except aiohttp.ClientError as e:
        record.error = f"{type(e).__name__}: {e}"
    except OSError as e:
        record.error = f"{type(e).__name__}: {e}"
    finally:
        if record.done_ns is None:
            record.done_ns = time.perf_counter_ns()
        state.finish()
        if state.prompt_tokens is not None:
            record.prompt_tokens = state.prompt_tokens
        record.server_e2e_s = state.server_e2e_s
        record.output_tokens = (
            state.completion_tokens if state.completion_tokens is not None else sum(record.chunk_tokens)
        )
    if record.error is None and state.error is not None:
        record.error = state.error
    if record.error is None and record.first_token_ns is None:
        record.error = "stream ended without any output text"
    record.ok = record.error is None


async def _read_stream(
    resp: aiohttp.ClientResponse,
    state: _StreamState,
    record: RequestRecord,
    on_chunk: Callable[[int], None] | None,
) -> None:
    """Split the SSE byte stream into ``data:`` events and time the ones that carry tokens.

    ``[DONE]`` stamps ``record.done_ns``; the rest of the body is still drained so that the
    connection goes back to the pool instead of being closed.
    """
    buffer = b""
    async for data in resp.content.iter_any():
        now = time.perf_counter_ns()
        if record.done_ns is not None:
            continue
        if buffer:
            data, buffer = buffer + data, b""
        if not data.endswith(b"\n"):  # keep an incomplete last line for the next read
            cut = data.rfind(b"\n") + 1
            data, buffer = data[:cut], data[cut:]
        for raw in data.split(b"\n"):
            if not raw.startswith(b"data:"):
                continue  # blank separators, comments, event:/id: fields
            payload = raw[5:].strip()
            if payload == b"[DONE]":
                record.done_ns = now
                break
            try:
                event = _json_loads(payload)
            except ValueError:
                state.error = f"undecodable stream event: {payload[:200]!r}"
                return
            if not isinstance(event, dict):
                continue
            tokens = state.tokens_in(event)
            if state.error is not None:
                return
            if tokens <= 0:
                continue
            if record.first_token_ns is None:
                record.first_token_ns = now
            record.chunk_times_ns.append(now)
            record.chunk_tokens.append(tokens)
            if on_chunk is not None:
                on_chunk(now)
