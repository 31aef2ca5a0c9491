"""SGLang's HTTP API over the simulated engine (aiohttp).

Endpoints and framing follow ``shared/facts/sglang.md``: ``/health`` (503 until the warm-up
request has run), ``/model_info``, ``/server_info`` (and their ``/get_*`` aliases), ``/generate``
(SSE with cumulative text), the OpenAI ``/v1/completions``, ``/v1/chat/completions`` and
``/v1/models``, ``/flush_cache`` and, with ``--enable-metrics``, Prometheus ``/metrics``.

Bodies, error replies and request validation are those of real SGLang 0.5.23, checked against it by
``tests/test_conformance.py`` (docs/simulator.md, "Conformance with real SGLang"). A request goes
through SGLang's three stages, each with its own way of refusing:

1. the HTTP layer (FastAPI/pydantic): content type, JSON, field types, required fields → 400
   ``{"object": "error", "type": "Bad Request", "message": "N validation error(s): …"}``;
2. the tokenizer manager: no input, prompt not shorter than the context, prompt + max_new_tokens over
   the context, negative max_new_tokens → /generate 400 ``{"error": {"message"}}`` (streamed: an
   ``error`` event, HTTP 200), OpenAI routes 400 ``BadRequestError`` (streamed too);
3. the scheduler: a prompt not shorter than ``max_req_input_len`` (the KV pool's limit) is aborted →
   400 as above when not streamed; streamed, /generate sends one chunk with an ``abort`` finish reason
   and the OpenAI routes an ``error`` event (HTTP 200). A request that passes has its
   ``max_new_tokens`` clipped to what the pool can hold.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tuner.sim import metrics, text
from tuner.sim.config import SimConfig, SimOptions
from tuner.sim.engine import Engine, SimRequest
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


class Refused(Exception):
    """A request refused at ``stage`` 2 (tokenizer manager) or 3 (scheduler) with ``message``."""

    def __init__(self, stage: int, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


class Reply(Exception):
    """Answer now with ``response`` (stage 1 refusals, simulated failures)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__()
        self.response = response


def openai_error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    """SGLang's ``ErrorResponse``: the body of OpenAI-route errors and of validation errors."""
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


def validation_error(path: str, errors: list[dict[str, Any]]) -> Reply:
    """FastAPI's RequestValidationError as SGLang 0.5.23 answers it (HTTP 400, type "Bad Request")."""
    n = len(errors)
    listed = "".join(f"  {e!r}\n" for e in errors)
    message = f"{n} validation error{'' if n == 1 else 's'}:\n{listed}\n  POST {path} {errors!r}"
    return Reply(openai_error(400, message, "Bad Request"))


def generate_error(status: int, message: str) -> web.Response:
    """/generate's own error body."""
    return web.json_response({"error": {"message": message}}, status=status)


@web.middleware
async def fastapi_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Starlette's JSON bodies for an unknown path or method: ``{"detail": "Not Found"}``."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.json_response({"detail": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed as e:
        return web.json_response(
            {"detail": "Method Not Allowed"},
            status=405,
            headers={"Allow": ", ".join(sorted(e.allowed_methods))},
        )


class Api:
    """The route handlers; ``app()`` builds the aiohttp application."""

    def __init__(self, state: ServerState) -> None:
        self.s = state
        self._early = random.Random(state.opts.seed ^ 0x5EED)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[fastapi_errors])
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/health_generate", self.health)
        for path in ("/model_info", "/get_model_info"):
            r.add_get(path, self.model_info)
        for path in ("/server_info", "/get_server_info"):
            r.add_get(path, self.server_info)
        r.add_post("/generate", self.generate)
        r.add_put("/generate", self.generate)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_get("/v1/models", self.models)
        r.add_route("*", "/flush_cache", self.flush_cache)
        r.add_get("/metrics", self.metrics)
        return app

    # ---- info ------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.s.ready else 503)

    async def model_info(self, request: web.Request) -> web.Response:
        c, m = self.s.cfg, self.s.model
        return web.json_response(
            {
                "model_path": c.model_path,
                "served_model_name": c.served_model_name,
                "tokenizer_path": c.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": WEIGHT_VERSION,
                "model_type": m.model_type,
                "architectures": [m.architecture],
            }
        )

    def _server_args(self) -> dict[str, Any]:
        """The arguments as SGLang's ServerArgs holds them: flag names, resolved where SGLang resolves."""
        s = self.s
        args: dict[str, Any] = dict(s.raw_args)
        args.update(
            served_model_name=s.cfg.served_model_name,
            tokenizer_path=args.get("tokenizer_path") or s.cfg.model_path,
            host=s.cfg.host,
            port=s.cfg.port,
            mem_fraction_static=s.cfg.mem_fraction_static,
            chunked_prefill_size=s.cfg.chunked_prefill_size,
            max_prefill_tokens=s.cfg.max_prefill_tokens,
            schedule_policy=s.cfg.schedule_policy,
            schedule_conservativeness=s.cfg.schedule_conservativeness,
            num_continuous_decode_steps=s.cfg.num_continuous_decode_steps,
            attention_backend=s.cfg.attention_backend,
            sampling_backend=s.cfg.sampling_backend,
            kv_cache_dtype=s.cfg.kv_cache_dtype,
            random_seed=s.cfg.random_seed,
            tp_size=s.cfg.tp_size,
            decode_log_interval=s.cfg.decode_log_interval,
            watchdog_timeout=s.cfg.watchdog_timeout,
        )
        for flag in (
            "disable_radix_cache", "enable_metrics", "skip_server_warmup", "allow_auto_truncate",
            "incremental_streaming_output", "enable_mixed_chunk", "enable_two_batch_overlap",
            "enable_hierarchical_cache", "enable_torch_compile", "disable_custom_all_reduce",
        ):  # fmt: skip
            args[flag] = bool(args.get(flag))
        # The kernel the simulated engine runs (awq_marlin for an AWQ checkpoint unless `awq` is asked for).
        args["quantization"] = None if s.cfg.quantization == "none" else s.cfg.quantization
        return args

    async def server_info(self, request: web.Request) -> web.Response:
        s = self.s
        args = self._server_args()
        engine = s.engine
        now = time.monotonic()
        recent = sum(n for t, n in engine.counters.recent_tokens if t > now - 5.0) / 5.0
        state = {
            **args,
            "effective_max_running_requests_per_dp": engine.max_running,
            "last_gen_throughput": float(recent),
            "memory_usage": {
                "weight": round(s.mem.weights_gib, 3),
                "kvcache": round(s.mem.kv_pool_gib, 3),
                "token_capacity": s.mem.kv_pool_tokens,
                "graph": round(s.mem.graph_gib, 3),
            },
            # the simulator's own view of the scheduler
            "num_running_reqs": len(engine.running),
            "num_waiting_reqs": len(engine.waiting),
        }
        body: dict[str, Any] = {
            **args,
            "launch_command": s.launch_command,
            "status": "ready" if s.ready else "starting",
            "max_total_num_tokens": s.mem.kv_pool_tokens,
            "max_req_input_len": s.max_req_input_len,
            "internal_states": [state],
            "version": s.version,
            # Simulator-only (real SGLang has no such field): memory as NVML would show it, read by
            # tuner.loadgen.telemetry.fetch_server_memory; and the simulator's own settings.
            "gpu_memory": {
                "used_mib": round(s.mem.used_mib(engine.activation_peak_gib), 1),
                "total_mib": round(s.gpu.mem_gib * 1024, 1),
                "source": "simulator",
            },
            "simulator": {
                "gpu": s.opts.gpu,
                "gpu_name": s.gpu.name,
                "model": s.opts.model,
                "seed": s.opts.seed,
                "noise": s.opts.noise,
                "noise_factor": engine.noise_factor,
                "kv_pool_tokens": s.mem.kv_pool_tokens,
                "effective_max_running_requests": engine.max_running,
                "inject": list(s.opts.inject),
            },
        }
        return web.json_response(body)

    async def models(self, request: web.Request) -> web.Response:
        c = self.s.cfg
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": c.served_model_name,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "sglang",
                        "root": c.served_model_name,
                        "parent": None,
                        "max_model_len": c.context_length,
                    }
                ],
            }
        )

    async def flush_cache(self, request: web.Request) -> web.Response:
        if self.s.engine.flush_cache():
            return web.Response(
                text="Cache flushed.\nPlease check backend logs for more details. (When there are running or "
                "waiting requests, the operation will not be performed.)\n"
            )
        return web.Response(status=400, text="Cache not flushed: requests are running or waiting.\n")

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.s.cfg.enable_metrics:  # not mounted without --enable-metrics
            return web.json_response({"detail": "Not Found"}, status=404)
        body = metrics.render(self.s.engine, self.s.cfg.served_model_name)
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

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

    # ---- /generate -------------------------------------------------------------------------------
    def _generate_prompt(self, body: dict[str, Any], path: str) -> list[int]:
        """The prompt of a /generate body: stage-1 type errors, stage-2 "no input"."""
        ids, txt = body.get("input_ids"), body.get("text")
        if txt is not None and not isinstance(txt, str | list):
            raise validation_error(
                path,
                [
                    {"type": "string_type", "loc": ("body", "text", "str"), "msg": "Input should be a valid string",
                     "input": txt},
                    {"type": "list_type", "loc": ("body", "text", "list[str]"), "msg": "Input should be a valid list",
                     "input": txt},
                ],
            )  # fmt: skip
        if ids is not None and not isinstance(ids, list):
            raise validation_error(
                path,
                [{"type": "list_type", "loc": ("body", "input_ids", "list[int]"), "msg": "Input should be a valid list",
                  "input": ids}],
            )  # fmt: skip
        if ids is not None:
            if not all(type(i) is int for i in ids):
                raise Reply(
                    generate_error(400, "The simulator serves one prompt per request (input_ids: list[int]).")
                )
            return list(ids)
        if isinstance(txt, str):
            return text.tokenize(txt, self.s.model.vocab)
        if txt is not None:
            raise Reply(generate_error(400, "The simulator serves one prompt per request (text: str)."))
        raise Refused(2, "Either text, input_ids or input_embeds should be provided.")

    @staticmethod
    def _int_param(value: Any, default: int) -> int:
        if value is None:
            return default
        if type(value) is not int:
            raise Reply(
                web.json_response({"error": f"invalid type: {json.dumps(value)}, expected i64"}, status=400)
            )
        return value

    async def generate(self, request: web.Request) -> web.StreamResponse:
        stream = False
        try:
            body = await self._body(request, openai=False)
            stream = bool(body.get("stream"))
            params = body.get("sampling_params") or {}
            if not isinstance(params, dict):
                raise Reply(generate_error(400, "sampling_params must be an object"))
            max_new = self._int_param(params.get("max_new_tokens"), DEFAULT_MAX_NEW)
            temperature = float(params.get("temperature", 1.0))
            prompt = self._generate_prompt(body, request.path)
            req = self._request(prompt, max_new, bool(params.get("ignore_eos", False)), temperature)
        except Reply as reply:
            return reply.response
        except (TypeError, ValueError) as e:
            return generate_error(400, f"invalid sampling_params: {e}")
        except Refused as e:
            if not stream:
                return generate_error(400, e.message)
            return await self._generate_refused_stream(request, e)
        if not stream:
            reason = None
            async for r in self._events(request, req):
                reason = r
            return web.json_response(
                {
                    "text": text.detokenize(req.output),
                    "output_ids": req.output,
                    "meta_info": self._meta(req, self._finish_reason(req, reason), first=True, final=True),
                }
            )
        incremental = self.s.cfg.incremental_streaming
        resp = await self._sse(request)
        sent = 0
        async for reason in self._events(request, req):
            ids = req.output[sent:] if incremental else req.output
            final = reason is not None
            chunk = {
                "text": text.detokenize(ids),
                "output_ids": list(ids),
                "meta_info": self._meta(req, self._finish_reason(req, reason), first=sent == 0, final=final),
            }
            sent = len(req.output)
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _generate_refused_stream(self, request: web.Request, e: Refused) -> web.StreamResponse:
        """A streamed /generate refused after the stream began (HTTP 200 either way)."""
        resp = await self._sse(request)
        if e.stage == 2:  # the tokenizer manager's ValueError, turned into an event by the route
            event: dict[str, Any] = {
                "error": {
                    "message": e.message,
                    "type": "invalid_request_error",
                    "code": 400,
                    "retryable": False,
                }
            }
        else:  # the scheduler aborts the request: it swaps the prompt for one token and finishes it
            reason = {
                "type": "abort",
                "message": e.message,
                "status_code": 400,
                "err_type": "BadRequestError",
            }
            meta = self._meta(
                None, reason, first=True, final=True, rid=uuid.uuid4().hex, arrival=time.monotonic()
            )
            event = {"text": "", "output_ids": [0], "meta_info": meta}
        await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    @staticmethod
    async def _sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        return resp

    # ---- OpenAI ----------------------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=True)

    def _openai_prompt(self, body: dict[str, Any], chat: bool, path: str) -> list[int]:
        """Stage 1 for the prompt of an OpenAI body (pydantic's errors), then its tokens."""
        if chat:
            messages = body.get("messages")
            if "messages" not in body:
                raise validation_error(
                    path,
                    [
                        {
                            "type": "missing",
                            "loc": ("body", "messages"),
                            "msg": "Field required",
                            "input": body,
                        }
                    ],
                )
            if not isinstance(messages, list):
                raise validation_error(
                    path,
                    [{"type": "list_type", "loc": ("body", "messages"), "msg": "Input should be a valid list",
                      "input": messages}],
                )  # fmt: skip
            return text.tokenize(text.chat_prompt(messages), self.s.model.vocab)
        if "prompt" not in body:
            raise validation_error(
                path, [{"type": "missing", "loc": ("body", "prompt"), "msg": "Field required", "input": body}]
            )
        p = body["prompt"]
        if isinstance(p, str):
            return text.tokenize(p, self.s.model.vocab)
        if isinstance(p, list) and p and all(type(i) is int for i in p):
            return list(p)
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
            return text.tokenize(p[0], self.s.model.vocab)
        if not isinstance(p, list):
            raise validation_error(
                path,
                [
                    {"type": "list_type", "loc": ("body", "prompt", "list[int]"), "msg": "Input should be a valid list",
                     "input": p},
                    {"type": "list_type", "loc": ("body", "prompt", "list[list[int]]"),
                     "msg": "Input should be a valid list", "input": p},
                    {"type": "string_type", "loc": ("body", "prompt", "str"), "msg": "Input should be a valid string",
                     "input": p},
                    {"type": "list_type", "loc": ("body", "prompt", "list[str]"), "msg": "Input should be a valid list",
                     "input": p},
                ],
            )  # fmt: skip
        raise Reply(openai_error(400, "The simulator serves one prompt per request."))

    def _openai_max_new(self, body: dict[str, Any], chat: bool, path: str) -> int | None:
        """max_tokens (or chat's max_completion_tokens); None: the endpoint's default."""
        value = body.get("max_completion_tokens") if chat else None
        if value is None:
            value = body.get("max_tokens")
        if value is None:
            return None if chat else OPENAI_COMPLETIONS_MAX
        if type(value) is not int:
            raise validation_error(
                path,
                [{"type": "int_type", "loc": ("body", "max_tokens"), "msg": "Input should be a valid integer",
                  "input": value}],
            )  # fmt: skip
        if not chat and value <= 0:  # CompletionRequest's validator; chat takes 0 (and refuses < 0 later)
            raise validation_error(
                path,
                [{"type": "value_error", "loc": ("body", "max_tokens"),
                  "msg": "Value error, max_tokens must be positive", "input": value,
                  "ctx": {"error": "ValueError('max_tokens must be positive')"}}],
            )  # fmt: skip
        return value

    async def _openai(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        stream = False
        try:
            body = await self._body(request, openai=True)
            stream = bool(body.get("stream"))
            prompt = self._openai_prompt(body, chat, request.path)
            max_new = self._openai_max_new(body, chat, request.path)
            req = self._request(
                prompt, max_new, bool(body.get("ignore_eos", False)), float(body.get("temperature", 1.0))
            )
        except Reply as reply:
            return reply.response
        except (TypeError, ValueError) as e:
            return openai_error(400, f"invalid request: {e}")
        except Refused as e:
            if e.stage == 2 or not stream:
                return openai_error(400, e.message)
            resp = await self._sse(request)  # the scheduler's abort reaches a stream already begun
            event = {"error": {"object": "error", "message": e.message, "type": "BAD_REQUEST", "param": None,
                               "code": 400}}  # fmt: skip
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        cid = uuid.uuid4().hex
        created = int(time.time())
        model = body.get("model") if isinstance(body.get("model"), str) else "default"
        obj = "chat.completion" if chat else "text_completion"

        def usage(full: bool = True) -> dict[str, Any]:
            u: dict[str, Any] = {
                "prompt_tokens": req.prompt_len,
                "total_tokens": req.prompt_len + len(req.output),
                "completion_tokens": len(req.output),
            }
            if full:
                u["prompt_tokens_details"] = None
            u["reasoning_tokens"] = 0
            if full:
                u["completion_tokens_details"] = None
            return u

        finish = {"length": "length", "stop": "stop"}
        if not stream:
            reason = "length"
            async for r in self._events(request, req):
                reason = finish.get(r or "", reason)
            out = text.detokenize(req.output)
            choice: dict[str, Any] = {"index": 0}
            if chat:
                choice["message"] = {"role": "assistant", "content": out, "reasoning_content": None}
            else:
                choice["text"] = out
            choice.update(logprobs=None, finish_reason=reason, matched_stop=None)
            return web.json_response(
                {
                    "id": cid,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage(),
                    "metadata": {
                        "weight_version": WEIGHT_VERSION,
                        "weight_versions": [{"version": WEIGHT_VERSION, "start": 0, "end": len(req.output)}],
                    },
                }
            )
        resp = await self._sse(request)
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            data = {"id": cid, "object": chunk_obj, "created": created, "model": model, "choices": choices}
            data.update(extra)
            await resp.write(f"data: {json.dumps(data)}\n\n".encode())

        def chat_choice(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
            return {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": reason,
                "matched_stop": None,
            }

        if chat:
            await send([chat_choice({"reasoning_content": None, "role": "assistant", "content": ""}, None)])
        sent = 0
        async for r in self._events(request, req):
            chunk_reason = finish.get(r) if r else None
            delta = text.detokenize(req.output[sent:])
            sent = len(req.output)
            if chat:
                # content in its own chunks; the finish reason in a last one with an empty delta
                if delta:
                    await send([chat_choice({"reasoning_content": None, "content": delta}, None)])
                if chunk_reason is not None:
                    await send([chat_choice({"reasoning_content": None}, chunk_reason)])
            elif delta or chunk_reason is not None:
                choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": chunk_reason,
                          "matched_stop": None}  # fmt: skip
                await send([choice], usage=None)
        opts = body.get("stream_options") or {}
        if isinstance(opts, dict) and opts.get("include_usage"):
            await send([], usage=usage(full=chat))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
