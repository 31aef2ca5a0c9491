"""The simulated server's state and what every route shares: the body checks of SGLang's stages,
turning a request into a :class:`SimRequest`, its token events and ``meta_info``."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tuner.sim import text
from tuner.sim.config import SimConfig, SimOptions
from tuner.sim.engine import Engine, SimRequest
from tuner.sim.http_errors import Refused, Reply, openai_error, validation_error
from tuner.sim.perfmodel import MemoryPlan
from tuner.sim.profiles import GpuProfile, ModelProfile

DEFAULT_MAX_NEW = 128  # SGLang's sampling_params default
OPENAI_COMPLETIONS_MAX = 16  # OpenAI's default max_tokens for /v1/completions
UNBOUNDED_MAX_NEW = 1 << 30  # chat without max_tokens: until EOS or the context (the scheduler clips it)
EARLY_STOP_P = 0.3  # without ignore_eos the simulated model ends early this often
INPUT_RESERVE = 5  # tp_worker: max_req_input_len = max_req_len - 5
WEIGHT_VERSION = "default"


@dataclass
class ServerState:
    """Everything the handlers read."""

    opts: SimOptions
    cfg: SimConfig
    gpu: GpuProfile
    model: ModelProfile
    mem: MemoryPlan
    engine: Engine
    version: str
    raw_args: dict[str, Any]
    launch_command: str = ""
    ready: bool = False
    failing: bool = False  # healthy but failing: /health 200, every request 503

    @property
    def max_req_len(self) -> int:
        """The longest sequence (prompt + output) one request may reach (SGLang's tp_worker)."""
        return min(self.cfg.context_length - 1, self.mem.kv_pool_tokens - 1)

    @property
    def max_req_input_len(self) -> int:
        return self.max_req_len - INPUT_RESERVE


class ApiBase:
    """State and helpers the route handlers share."""

    def __init__(self, state: ServerState) -> None:
        self.s = state
        self._early = random.Random(state.opts.seed ^ 0x5EED)

    # ---- stage 1: the HTTP layer -----------------------------------------------------------------
    async def _body(self, request: web.Request, *, openai: bool) -> dict[str, Any]:
        """The JSON object of the request, or a stage-1 refusal."""
        path = request.path
        if openai and request.content_type != "application/json":
            # SGLang's validate_json_request dependency on the OpenAI routes
            raise validation_error(
                path,
                [
                    {
                        "loc": ["header", "content-type"],
                        "msg": "Unsupported Media Type: Only 'application/json' is allowed",
                        "type": "value_error",
                    }
                ],
            )
        raw = await request.read()
        is_json = "Content-Type" not in request.headers or request.content_type == "application/json"
        is_json = is_json or request.content_type.endswith("+json")
        body: Any = raw
        if raw and is_json:  # FastAPI decodes JSON bodies only; any other body stays bytes
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                pos = getattr(e, "pos", getattr(e, "start", 0))
                error = getattr(e, "msg", str(e))
                raise validation_error(
                    path,
                    [
                        {
                            "type": "json_invalid",
                            "loc": ("body", pos),
                            "msg": "JSON decode error",
                            "input": {},
                            "ctx": {"error": error},
                        }
                    ],
                ) from e
        if not isinstance(body, dict):
            if path == "/v1/chat/completions":  # SGLang 0.5.23's chat route fails on it: a bare 500
                raise Reply(web.Response(status=500, text="Internal Server Error"))
            if path == "/generate":
                raise validation_error(
                    path,
                    [
                        {
                            "type": "dataclass_type",
                            "loc": ("body",),
                            "msg": "Input should be a dictionary or an instance of GenerateReqInput",
                            "input": body,
                            "ctx": {"class_name": "GenerateReqInput"},
                        }
                    ],
                )
            raise validation_error(
                path,
                [
                    {
                        "type": "model_attributes_type",
                        "loc": ("body",),
                        "msg": "Input should be a valid dictionary or object to extract fields from",
                        "input": body,
                    }
                ],
            )
        if self.s.failing:
            raise Reply(
                openai_error(
                    503,
                    "The scheduler is not responding (simulated: --sim-inject fail-requests)",
                    "ServiceUnavailableError",
                )
            )
        return body

    # ---- stages 2 and 3: the tokenizer manager and the scheduler ---------------------------------
    def _tokenizer_checks(self, prompt: list[int], max_new: int | None) -> tuple[list[int], int | None]:
        """Stage 2: lengths against the context (truncated instead with --allow-auto-truncate)."""
        cfg = self.s.cfg
        ctx = cfg.context_length
        if len(prompt) >= ctx:
            if not cfg.allow_auto_truncate:
                raise Refused(
                    2,
                    f"The input ({len(prompt)} tokens) is longer than the model's context length ({ctx} tokens).",
                )
            prompt = prompt[:ctx]
        if max_new is not None and len(prompt) + max_new > ctx:
            if not cfg.allow_auto_truncate:
                raise Refused(
                    2,
                    f"Requested token count exceeds the model's maximum context length of {ctx} tokens. You "
                    f"requested a total of {len(prompt) + max_new} tokens: {len(prompt)} tokens from the input "
                    f"messages and {max_new} tokens for the completion. Please reduce the number of tokens in "
                    "the input messages or the completion to fit within the limit.",
                )
            max_new = max(0, ctx - len(prompt))
        if max_new is not None and max_new < 0:
            raise Refused(2, f"max_new_tokens must be at least 0, got {max_new}.")
        return prompt, max_new

    def _scheduler_checks(self, prompt: list[int], max_new: int | None) -> tuple[list[int], int]:
        """Stage 3: the prompt against the KV pool; max_new_tokens clipped to what the pool holds."""
        s = self.s
        limit = s.max_req_input_len
        if len(prompt) >= limit:
            if not s.cfg.allow_auto_truncate:
                raise Refused(
                    3,
                    f"Input length ({len(prompt)} tokens) exceeds the maximum allowed length ({limit} tokens). "
                    "Use a shorter input or enable --allow-auto-truncate.",
                )
            prompt = prompt[:limit]
        n = len(prompt)
        want = UNBOUNDED_MAX_NEW if max_new is None else max_new
        # init_req_max_new_tokens: the sequence limit, then the empty pool's budget (page size 1)
        return prompt, max(0, min(want, s.max_req_len - n - 1, s.mem.kv_pool_tokens - n - 2))

    def _request(
        self, prompt: list[int], max_new: int | None, ignore_eos: bool, temperature: float
    ) -> SimRequest:
        """Stages 2 and 3 (raising :class:`Refused`), then the engine request."""
        prompt, max_new = self._tokenizer_checks(prompt, max_new)
        prompt, max_new = self._scheduler_checks(prompt, max_new)
        if not prompt:
            prompt = [0]
        # Greedy decoding gives one output per prompt; sampling draws from the seeded generator.
        key = self.s.engine.new_rid() if temperature > 0 else f"greedy:{zlib.crc32(str(prompt).encode()):08x}"
        stop_at = max_new
        if not ignore_eos and max_new > 1 and self._early.random() < EARLY_STOP_P:
            stop_at = self._early.randint(1, max_new)
        return SimRequest(
            rid=uuid.uuid4().hex,
            sample_key=key,
            prompt=prompt,
            max_new=max_new,
            ignore_eos=ignore_eos,
            stop_at=max(stop_at, 1),
            arrival=time.monotonic(),
        )

    async def _events(self, request: web.Request, req: SimRequest) -> AsyncIterator[str | None]:
        """Yield once per output token: None, or the finish reason with the last one.

        If the client goes away the request is aborted in the engine.
        """
        if req.max_new == 0:
            yield "length"
            return
        self.s.engine.submit(req)
        try:
            while True:
                kind, reason = await req.queue.get()
                if kind == "abort":
                    return
                yield reason
                if reason is not None:
                    return
        except (asyncio.CancelledError, ConnectionResetError):
            self.s.engine.abort(req)
            raise

    @staticmethod
    def _finish_reason(req: SimRequest, reason: str | None) -> dict[str, Any] | None:
        if reason is None:
            return None
        if reason == "stop":
            return {"type": "stop", "matched": text.EOS_TOKEN}
        return {"type": "length", "length": len(req.output)}

    @staticmethod
    def _meta(
        req: SimRequest | None,
        finish_reason: dict[str, Any] | None,
        *,
        first: bool,
        final: bool,
        rid: str = "",
        arrival: float = 0.0,
    ) -> dict[str, Any]:
        """meta_info as SGLang 0.5.23 sends it: ``weight_versions`` and ``e2e_latency`` with the last
        chunk only, ``response_sent_to_client_ts`` with the first (and in a non-streamed reply)."""
        prompt, out, cached = (req.prompt_len, len(req.output), req.cached) if req else (1, 1, 0)
        meta: dict[str, Any] = {
            "id": req.rid if req else rid,
            "finish_reason": finish_reason,
            "prompt_tokens": prompt,
            "weight_version": WEIGHT_VERSION,
            "num_retractions": req.retractions if req else 0,
            "reasoning_tokens": 0,
            "completion_tokens": out,
            "cached_tokens": cached,
        }
        if final:
            meta["weight_versions"] = [{"version": WEIGHT_VERSION, "start": 0, "end": out}]
        meta["cached_tokens_details"] = {"device": cached, "host": 0} if cached else None
        meta["dp_rank"] = None
        if final:
            meta["e2e_latency"] = time.monotonic() - (req.arrival if req else arrival)
        if first:
            meta["response_sent_to_client_ts"] = time.time()
        return meta

    @staticmethod
    async def _sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        return resp
