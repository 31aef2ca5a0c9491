"""SGLang's HTTP API over the simulated engine (aiohttp).

Endpoints and framing follow ``shared/facts/sglang.md``: ``/health`` (503 until the warm-up
request has run), ``/model_info``, ``/server_info`` (and their ``/get_*`` aliases), ``/generate``
(SSE with cumulative text), the OpenAI ``/v1/completions``, ``/v1/chat/completions`` and
``/v1/models``, ``/flush_cache`` and, with ``--enable-metrics``, Prometheus ``/metrics``.

Bodies, error replies and request validation are those of real SGLang 0.5.23, checked against it by
``tests/integration/test_conformance.py`` (docs/simulator.md, "Conformance with real SGLang"). A request goes
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

import time
from typing import Any

from aiohttp import web

from tuner.sim import metrics
from tuner.sim.api_base import WEIGHT_VERSION, ServerState
from tuner.sim.api_generate import GenerateApi
from tuner.sim.api_openai import OpenAIApi
from tuner.sim.http_errors import fastapi_errors

__all__ = ["Api", "ServerState"]


class Api(GenerateApi, OpenAIApi):
    """The route handlers; ``app()`` builds the aiohttp application."""

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
