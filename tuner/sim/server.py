"""SGLang's HTTP API over the simulated engine (aiohttp).

Endpoints and framing follow ``shared/facts/sglang.md``: ``/health`` (503 until the warm-up
request has run), ``/model_info``, ``/server_info`` (and their ``/get_*`` aliases), ``/generate``
(SSE with cumulative text), the OpenAI ``/v1/completions``, ``/v1/chat/completions`` and
``/v1/models``, ``/flush_cache`` and, with ``--enable-metrics``, Prometheus ``/metrics``.
"""

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

from tuner.sim import metrics, text
from tuner.sim.config import SimConfig, SimOptions
from tuner.sim.engine import Engine, SimRequest
from tuner.sim.perfmodel import MemoryPlan
from tuner.sim.profiles import GpuProfile, ModelProfile

DEFAULT_MAX_NEW = 128  # SGLang's sampling_params default
OPENAI_COMPLETIONS_MAX = 16  # OpenAI's default max_tokens for /v1/completions
EARLY_STOP_P = 0.3  # without ignore_eos the simulated model ends early this often


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
    ready: bool = False
    failing: bool = False  # healthy but failing: /health 200, every request 503


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> web.Response:
    kind = "BadRequestError" if status == 400 else "ServiceUnavailableError" if status == 503 else "Error"
    return web.json_response(
        {"object": "error", "message": message, "type": kind, "code": status}, status=status
    )


class Api:
    """The route handlers; ``app()`` builds the aiohttp application."""

    def __init__(self, state: ServerState) -> None:
        self.s = state
        self._early = random.Random(state.opts.seed ^ 0x5EED)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/health_generate", self.health)
        for path in ("/model_info", "/get_model_info"):
            r.add_get(path, self.model_info)
        for path in ("/server_info", "/get_server_info"):
            r.add_get(path, self.server_info)
        r.add_post("/generate", self.generate)
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
        c = self.s.cfg
        return web.json_response(
            {
                "model_path": c.model_path,
                "tokenizer_path": c.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
            }
        )

    async def server_info(self, request: web.Request) -> web.Response:
        s = self.s
        body: dict[str, Any] = {**s.raw_args, **s.cfg.as_server_args()}
        body.update(
            version=s.version,
            max_total_num_tokens=s.mem.kv_pool_tokens,
            max_running_requests=s.engine.max_running,
            gpu_memory={
                "used_mib": round(s.mem.used_mib(s.engine.activation_peak_gib), 1),
                "total_mib": round(s.gpu.mem_gib * 1024, 1),
                "source": "simulator",
            },
            simulator={
                "gpu": s.opts.gpu,
                "gpu_name": s.gpu.name,
                "model": s.opts.model,
                "seed": s.opts.seed,
                "noise": s.opts.noise,
                "noise_factor": s.engine.noise_factor,
                "kv_pool_tokens": s.mem.kv_pool_tokens,
                "inject": list(s.opts.inject),
            },
            internal_states=[
                {"num_running_reqs": len(s.engine.running), "num_waiting_reqs": len(s.engine.waiting)}
            ],
        )
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
        if not self.s.cfg.enable_metrics:
            raise web.HTTPNotFound(text="Not Found: start the server with --enable-metrics")
        body = metrics.render(self.s.engine, self.s.cfg.served_model_name)
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

    # ---- generation ------------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"request body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        if self.s.failing:
            raise ApiError(503, "The scheduler is not responding (simulated: --sim-inject fail-requests)")
        return body

    def _request(self, prompt: list[int], max_new: int, ignore_eos: bool, temperature: float) -> SimRequest:
        s = self.s
        limit = min(s.cfg.context_length, s.mem.kv_pool_tokens)
        if max_new < 0:
            raise ApiError(400, f"max_new_tokens must be at least 0, got {max_new}")
        if len(prompt) + max_new > limit:
            if s.cfg.allow_auto_truncate and max_new < limit:
                prompt = prompt[: limit - max_new]
            else:
                raise ApiError(
                    400,
                    f"Requested token count exceeds the model's maximum context length of {limit} tokens. "
                    f"You requested a total of {len(prompt) + max_new} tokens: {len(prompt)} tokens from the "
                    f"input messages and {max_new} tokens for the completion. Please reduce the number of "
                    "tokens in the input messages or the completion to fit within the limit.",
                )
        if not prompt:
            prompt = [0]
        # Greedy decoding gives one output per prompt; sampling draws from the seeded generator.
        key = s.engine.new_rid() if temperature > 0 else f"greedy:{zlib.crc32(str(prompt).encode()):08x}"
        stop_at = max_new
        if not ignore_eos and max_new > 1 and self._early.random() < EARLY_STOP_P:
            stop_at = self._early.randint(1, max_new)
        return SimRequest(
            rid=uuid.uuid4().hex,
            sample_key=key,
            prompt=prompt,
            max_new=max(max_new, 0),
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

    def _meta(self, req: SimRequest, reason: str | None) -> dict[str, Any]:
        return {
            "id": req.rid,
            "finish_reason": self._finish_reason(req, reason),
            "prompt_tokens": req.prompt_len,
            "completion_tokens": len(req.output),
            "cached_tokens": req.cached,
            "e2e_latency": time.monotonic() - req.arrival,
        }

    async def generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            params = body.get("sampling_params") or {}
            if "input_ids" in body and body["input_ids"] is not None:
                ids = body["input_ids"]
                if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                    raise ApiError(400, "input_ids must be a list of integers")
                prompt = list(ids)
            elif isinstance(body.get("text"), str):
                prompt = text.tokenize(body["text"], self.s.model.vocab)
            else:
                raise ApiError(
                    400, "Either text or input_ids should be provided (a single prompt per request)."
                )
            req = self._request(
                prompt,
                int(params.get("max_new_tokens", DEFAULT_MAX_NEW)),
                bool(params.get("ignore_eos", False)),
                float(params.get("temperature", 1.0)),
            )
        except ApiError as e:
            return _error(e.status, e.message)
        except (TypeError, ValueError) as e:
            return _error(400, f"invalid sampling_params: {e}")
        if not body.get("stream"):
            reason = None
            async for r in self._events(request, req):
                reason = r
            return web.json_response(
                {
                    "text": text.detokenize(req.output),
                    "output_ids": req.output,
                    "meta_info": self._meta(req, reason),
                }
            )
        incremental = self.s.cfg.incremental_streaming
        resp = await self._sse(request)
        sent = 0
        async for reason in self._events(request, req):
            ids = req.output[sent:] if incremental else req.output
            sent = len(req.output)
            chunk = {"text": text.detokenize(ids), "output_ids": ids, "meta_info": self._meta(req, reason)}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    @staticmethod
    async def _sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        return resp

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai(request, chat=True)

    async def _openai(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await self._body(request)
            if chat:
                if not isinstance(body.get("messages"), list):
                    raise ApiError(400, "messages: field required (a list of {role, content})")
                prompt_text = text.chat_prompt(body["messages"])
                default_max = DEFAULT_MAX_NEW
            else:
                p = body.get("prompt")
                if isinstance(p, list) and p and all(isinstance(i, int) for i in p):
                    prompt_text = None
                elif isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
                    prompt_text = p[0]
                elif isinstance(p, str):
                    prompt_text = p
                else:
                    raise ApiError(400, "prompt: a string, a list of one string, or a list of token ids")
                default_max = OPENAI_COMPLETIONS_MAX
            prompt = (
                text.tokenize(prompt_text, self.s.model.vocab)
                if prompt_text is not None
                else list(body["prompt"])
            )
            max_new = body.get("max_completion_tokens") or body.get("max_tokens") or default_max
            req = self._request(
                prompt, int(max_new), bool(body.get("ignore_eos", False)), float(body.get("temperature", 1.0))
            )
        except ApiError as e:
            return _error(e.status, e.message)
        except (TypeError, ValueError) as e:
            return _error(400, f"invalid request: {e}")
        cid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        model = self.s.cfg.served_model_name
        obj = "chat.completion" if chat else "text_completion"

        def usage() -> dict[str, int]:
            return {
                "prompt_tokens": req.prompt_len,
                "completion_tokens": len(req.output),
                "total_tokens": req.prompt_len + len(req.output),
            }

        finish = {"length": "length", "stop": "stop"}
        if not body.get("stream"):
            reason = "length"
            async for r in self._events(request, req):
                reason = finish.get(r or "", reason)
            out = text.detokenize(req.output)
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": reason}
            if chat:
                choice["message"] = {"role": "assistant", "content": out}
            else:
                choice["text"] = out
            return web.json_response(
                {
                    "id": cid,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage(),
                }
            )
        resp = await self._sse(request)
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"

        async def send(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
            data = {"id": cid, "object": chunk_obj, "created": created, "model": model, "choices": choices}
            data.update(extra or {})
            await resp.write(f"data: {json.dumps(data)}\n\n".encode())

        if chat:
            await send(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        sent = 0
        async for r in self._events(request, req):
            chunk_reason = finish.get(r) if r else None
            delta = text.detokenize(req.output[sent:])
            sent = len(req.output)
            if not delta and chunk_reason is None:
                continue
            if chat:
                await send(
                    [
                        {
                            "index": 0,
                            "delta": {"content": delta},
                            "logprobs": None,
                            "finish_reason": chunk_reason,
                        }
                    ]
                )
            else:
                await send([{"index": 0, "text": delta, "logprobs": None, "finish_reason": chunk_reason}])
        opts = body.get("stream_options") or {}
        if isinstance(opts, dict) and opts.get("include_usage"):
            await send([], {"usage": usage()})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
