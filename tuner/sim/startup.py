"""Start-up of the simulated server: SGLang's milestones, their durations, then serving.

Order and log lines follow ``sglang.launch_server``: arguments, weight loading, KV pool,
CUDA-graph capture (with torch.compile inside it), the scheduler summary, the HTTP server,
the warm-up request, and "The server is fired up and ready to roll!". Durations are modelled
(``STARTUP_*``) and multiplied by ``--sim-startup-scale``; serving always runs in real time.
A configuration that fails dies at the milestone where SGLang would (``failures.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import random
import shlex
import signal
import sys
import time
from collections.abc import Sequence

from packaging.version import Version

from tuner.engines import sglang, sglang_flags
from tuner.sim import cli, failures, perfmodel
from tuner.sim.config import SimConfig, SimOptions, resolve
from tuner.sim.engine import Engine, SimRequest
from tuner.sim.logs import log
from tuner.sim.profiles import GpuProfile, ModelProfile, gpu_profile, model_profile

STARTUP_IMPORT_S = 9.0  # python, torch and sglang imports, CUDA initialisation
STARTUP_LOAD_GIB_S = 1.2  # safetensors from a warm page cache into GPU memory, GiB/s
STARTUP_KV_S = 1.0  # KV pool allocation and memory profiling
STARTUP_GRAPH_S_PER_BS = 1.2  # capture of one batch size for a 64-layer model (scaled by layers)
STARTUP_COMPILE_S = 30.0  # torch.compile: first compilation
STARTUP_COMPILE_S_PER_BS = 8.0  # torch.compile: each further batch size up to --torch-compile-max-bs
WARMUP_TEXT = "The capital city of France is"
WARMUP_TOKENS = 8


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tuner.sim``."""
    args = list(sys.argv[1:] if argv is None else argv)
    ns, opts = cli.parse(args)
    gpu, model = gpu_profile(opts.gpu), model_profile(opts.model)
    if opts.bandwidth_tbs is not None:
        gpu = dataclasses.replace(gpu, bandwidth_tbs=opts.bandwidth_tbs)
    cfg = resolve(ns, gpu, model)
    raw = dict(vars(ns))
    log(f"server_args={raw!r}")  # SGLang 0.5.23 logs its ServerArgs as a dict
    log(
        f"Simulated SGLang {opts.sglang_version} on {gpu.name} ({gpu.arch}), model profile {model.hf_id}, seed {opts.seed}"
    )
    for flag, (since, warning) in sglang_flags.DEPRECATED.items():
        if getattr(ns, flag.replace("-", "_"), None) and Version(opts.sglang_version) >= Version(since):
            log(f"WARNING: {warning}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(cfg, opts, gpu, model, raw, list(args)))
    return 0


async def _pause(seconds: float, opts: SimOptions) -> None:
    await asyncio.sleep(seconds * opts.startup_scale)


async def _serve(
    cfg: SimConfig,
    opts: SimOptions,
    gpu: GpuProfile,
    model: ModelProfile,
    raw: dict[str, object],
    argv: list[str],
) -> None:
    from aiohttp import web

    from tuner.sim.server import Api, ServerState

    mem = perfmodel.memory_plan(cfg, gpu, model)
    fail = failures.startup_failure(cfg, gpu, model, mem, opts.inject)

    def die_at(stage: str) -> None:
        if fail is None or fail.stage != stage:
            return
        if fail.segfault:
            failures.scheduler_segfault()
        failures.scheduler_exception(fail.exception, at_init=True)

    # Log lines as SGLang 0.5.23 writes them; with one GPU its scheduler's lines have no "TP0" prefix.
    await _pause(STARTUP_IMPORT_S, opts)
    avail = gpu.mem_gib - perfmodel.CONTEXT_GIB
    log("Init torch distributed begin.")
    log(f"Load weight begin. avail mem={avail:.2f} GB")
    load_s = model.weight_gib / STARTUP_LOAD_GIB_S
    await _pause(load_s, opts)
    die_at("load")
    avail -= model.weight_gib + mem.marlin_gib
    log(
        f"Load weight end. elapsed={load_s * opts.startup_scale:.2f} s, type={model.architecture}, "
        f"avail mem={avail:.2f} GB, mem usage={model.weight_gib + mem.marlin_gib:.2f} GB."
    )
    await _pause(STARTUP_KV_S, opts)
    die_at("kv")
    half = mem.kv_pool_gib / 2
    log(
        f"KV Cache is allocated. dtype: {_kv_dtype(cfg, raw)}, #tokens: {mem.kv_pool_tokens}, "
        f"K size: {half:.2f} GB, V size: {half:.2f} GB"
    )
    avail -= mem.kv_pool_gib + mem.hicache_gib
    log(f"Memory pool end. avail mem={avail:.2f} GB")
    die_at("attention")
    if cfg.cuda_graph:
        log(f"Capture cuda graph begin. This can take up to several minutes. avail mem={avail:.2f} GB")
        sizes = perfmodel.captured_batch_sizes(cfg)
        capture = len(sizes) * STARTUP_GRAPH_S_PER_BS * model.layers / 64
        if cfg.torch_compile:
            compiled = sum(1 for b in sizes if b <= cfg.torch_compile_max_bs)
            capture += STARTUP_COMPILE_S + STARTUP_COMPILE_S_PER_BS * compiled
        await _pause(capture * 0.3, opts)
        die_at("graph")
        await _pause(capture * 0.7, opts)
        avail -= mem.graph_gib + mem.compile_gib
        log(
            f"Capture cuda graph end. Time elapsed: {capture * opts.startup_scale:.2f} s. "
            f"mem usage={mem.graph_gib + mem.compile_gib:.2f} GB. avail mem={avail:.2f} GB."
        )
    noise_rng = random.Random(opts.seed)
    noise_factor = math.exp(noise_rng.gauss(0.0, opts.noise)) if opts.noise > 0 else 1.0
    load = failures.LoadFailures(cfg, gpu, model, mem, opts.inject)
    engine = Engine(
        cfg,
        gpu,
        model,
        mem,
        seed=opts.seed,
        noise_factor=noise_factor,
        jitter=opts.noise / 3,
        on_batch=load.check,
    )
    log(
        f"max_total_num_tokens={mem.kv_pool_tokens}, chunked_prefill_size={cfg.chunked_prefill_size}, "
        f"max_prefill_tokens={cfg.max_prefill_tokens}, max_running_requests={engine.max_running}, "
        f"context_len={cfg.context_length}, available_gpu_mem={avail:.2f} GB"
    )
    state = ServerState(
        opts=opts,
        cfg=cfg,
        gpu=gpu,
        model=model,
        mem=mem,
        engine=engine,
        version=opts.sglang_version,
        raw_args=raw,
        launch_command=shlex.join(argv),
    )
    runner = web.AppRunner(Api(state).app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        log(
            f"ERROR: [Errno {e.errno}] error while attempting to bind on address ({cfg.host!r}, {cfg.port}): {e.strerror}"
        )
        raise SystemExit(1) from e
    # Until now SIGTERM kills at once (default action); from here it shuts the server down cleanly.
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)
    scheduler = asyncio.create_task(engine.run())
    log(f"INFO:     Started server process [{os.getpid()}]")
    log("INFO:     Waiting for application startup.")
    log("INFO:     Application startup complete.")
    log(f"INFO:     Uvicorn running on http://{cfg.host}:{cfg.port} (Press CTRL+C to quit)")
    if not cfg.skip_warmup:
        await _warmup(engine, model)
        log('INFO:     127.0.0.1:0 - "POST /generate HTTP/1.1" 200 OK')
    state.ready = True
    state.failing = "fail-requests" in opts.inject
    log(sglang.READY_LINE)
    await stop.wait()
    # SGLang's graceful exit: /health answers 503 from here on; requests still running are cut.
    state.ready = False
    log(f"{received[0]} received. signum=None frame=None. Draining requests and shutting down...")
    log(
        f"Gracefully exiting... Remaining number of requests {len(engine.running) + len(engine.waiting)}. "
        f"Remaining requests remaining_rids={[r.rid for r in engine.running + engine.waiting]}."
    )
    scheduler.cancel()
    await runner.cleanup()
    log("INFO:     Shutting down")
    log("INFO:     Application shutdown complete.")
    log(f"INFO:     Finished server process [{os.getpid()}]")


async def _warmup(engine: Engine, model: ModelProfile) -> None:
    from tuner.sim.text import tokenize

    req = SimRequest(
        rid=engine.new_rid(),
        prompt=tokenize(WARMUP_TEXT, model.vocab),
        max_new=WARMUP_TOKENS,
        ignore_eos=True,
        stop_at=WARMUP_TOKENS,
        arrival=time.monotonic(),
    )
    engine.submit(req)
    while (await req.queue.get())[1] is None:
        pass


_TORCH_DTYPES = {"half": "float16", "float16": "float16", "float": "float32", "float32": "float32"}


def _kv_dtype(cfg: SimConfig, raw: dict[str, object]) -> str:
    """The KV cache's torch dtype: an FP8 cache, else the model's (bf16 unless --dtype says otherwise)."""
    if cfg.kv_cache_dtype.startswith("fp8"):
        return "torch.float8_" + cfg.kv_cache_dtype.removeprefix("fp8_")
    return "torch." + _TORCH_DTYPES.get(str(raw.get("dtype") or "auto"), "bfloat16")
