"""One conformance suite, two servers: real SGLang 0.5.23 (CPU engine) and ``python -m tuner.sim``.

Every check runs against both (test ids ``[real]`` and ``[sim]``) and states what real SGLang 0.5.23
does, measured against the real server here (docs/sglang-cpu.md): shapes and semantics, never values
(the simulator's text is synthetic). A check that passes on ``real`` and fails on ``sim`` is a
simulator bug. Deliberate differences are listed in docs/simulator.md, "Conformance with real SGLang",
and are asserted as such here (``kind == SIM`` branches), never hidden.

Both servers get the same SGLang flags (``tuner/testing/sglang_servers.py``: the CPU recipe with a 2048-token
KV pool below the model's 4096-token context); the simulator runs its profile of the same tiny Llama,
so a prompt of N words is N tokens on both. Each real launch costs 20-60 s, so one server of each kind
serves the whole module; the last check stops it with SIGTERM. The real server's checks are skipped
without the SGLang CPU venv or model (failed with ``TUNER_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tuner.core.failures import ExitStatus, FailureKind, Phase, classify
from tuner.engines import sglang
from tuner.loadgen.prompts import WORDS
from tuner.loadgen.telemetry import fetch_server_memory
from tuner.testing.sglang_servers import (
    POOL_TOKENS,
    REAL,
    SIM,
    CliResult,
    Response,
    ServerRun,
    port_free,
    real_sglang_server,  # noqa: F401  (a session fixture, requested through `server`)
    require_real,
    run_clis,
    sim_sglang_server,  # noqa: F401  (a session fixture, requested through `server`)
)

VERSION = "0.5.23"
CONTEXT = 4096  # the tiny Llama's max_position_embeddings
MAX_REQ_LEN = min(CONTEXT - 1, POOL_TOKENS - 1)  # SGLang's tp_worker: the longest sequence
MAX_REQ_INPUT_LEN = MAX_REQ_LEN - 5  # ... and the longest prompt the scheduler takes
# ChatML around one user message: <|im_start|> user \n … <|im_end|> \n <|im_start|> assistant \n
CHAT_EXTRA_TOKENS = 8

# /generate meta_info keys (real 0.5.23). A streamed chunk has BASE; the last adds FINAL_ONLY; the
# first (and a non-streamed reply) also has response_sent_to_client_ts.
META_BASE = {
    "id", "finish_reason", "prompt_tokens", "weight_version", "num_retractions", "reasoning_tokens",
    "completion_tokens", "cached_tokens", "cached_tokens_details", "dp_rank",
}  # fmt: skip
META_FINAL_ONLY = {"weight_versions", "e2e_latency"}
META_SENT_TS = "response_sent_to_client_ts"
META_FULL = META_BASE | META_FINAL_ONLY | {META_SENT_TS}
OPENAI_TOP = {"id", "object", "created", "model", "choices", "usage", "metadata"}
USAGE_FULL = {
    "prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details", "reasoning_tokens",
    "completion_tokens_details",
}  # fmt: skip
USAGE_COMPLETIONS_STREAM = {"prompt_tokens", "total_tokens", "completion_tokens", "reasoning_tokens"}
COMPLETION_CHOICE = {"index", "text", "logprobs", "finish_reason", "matched_stop"}
CHAT_CHOICE = {"index", "message", "logprobs", "finish_reason", "matched_stop"}
CHAT_CHUNK_CHOICE = {"index", "delta", "logprobs", "finish_reason", "matched_stop"}
HEX_ID = re.compile(r"[0-9a-f]{32}")
STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "


def words(n: int, start: int = 0) -> str:
    """``n`` of the load generator's prompt words: exactly ``n`` tokens on both servers."""
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", params=[pytest.param(REAL, marks=pytest.mark.sglang_cpu), SIM])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == REAL:
        require_real()
    return str(request.param)


@pytest.fixture(scope="session")
def server(kind: str, request: pytest.FixtureRequest) -> ServerRun:
    return request.getfixturevalue(f"{kind}_sglang_server")  # type: ignore[no-any-return]


CLI_CASES = {
    "unknown_flag": ["--no-such-flag", "3"],
    "bad_choice": ["--schedule-policy", "bogus"],
}


@pytest.fixture(scope="session")
def cli(kind: str) -> dict[str, CliResult]:
    """The argparse failures of ``kind``, run side by side (no server starts: argparse exits first)."""
    return run_clis(kind, CLI_CASES)


def gen(server: ServerRun, n_prompt: int = 6, n_out: int = 5, **extra: Any) -> Response:
    body = {
        "text": words(n_prompt),
        "sampling_params": {"max_new_tokens": n_out, "temperature": 0, "ignore_eos": True},
        **extra,
    }
    return server.post("/generate", body)


def openai_body(chat: bool, n_prompt: int, n_out: int | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "conformance", "temperature": 0, "ignore_eos": True, **extra}
    if n_out is not None:
        body["max_tokens"] = n_out
    if chat:
        body["messages"] = [{"role": "user", "content": words(n_prompt)}]
    else:
        body["prompt"] = words(n_prompt)
    return body


def chunks(resp: Response) -> tuple[list[dict[str, Any]], str]:
    """The JSON events of an SSE reply and its last payload (``[DONE]`` when well formed)."""
    assert resp.status == 200, resp.body[:500]
    assert resp.content_type.startswith("text/event-stream"), resp.content_type
    events = resp.sse()
    return [json.loads(e) for e in events[:-1]], events[-1]


def openai_error(resp: Response, status: int, kind_: str, *needles: str) -> None:
    """An OpenAI-style error body: {object: error, message, type, param, code}."""
    assert resp.status == status, (resp.status, resp.body[:500])
    body = resp.json()
    assert set(body) == {"object", "message", "type", "param", "code"}, body
    assert body["object"] == "error" and body["code"] == status and body["param"] is None, body
    assert body["type"] == kind_, body
    for needle in needles:
        assert needle in body["message"], (needle, body["message"][:500])


def generate_error(resp: Response, status: int, message: str) -> None:
    """/generate's own error body: {"error": {"message": ...}}."""
    assert resp.status == status, (resp.status, resp.body[:500])
    assert resp.json() == {"error": {"message": message}}


# ------------------------------------------------------------------------------------ lifecycle


def test_health_is_not_200_before_ready(server: ServerRun) -> None:
    """While starting, /health is refused (nothing listens) or 503 (listening, warm-up not done)."""
    history = server.health_history
    assert history and history[-1][1] == 200
    before = [status for _, status in history[:-1]]
    assert before, "the first /health poll already answered 200"
    assert set(before) <= {None, 503}, sorted(set(before), key=str)
    assert before[0] is None  # nothing listens right after the process starts


def test_health_is_200_when_ready(server: ServerRun) -> None:
    for path in ("/health", "/health_generate"):
        resp = server.get(path)
        assert (resp.status, resp.body) == (200, b""), (path, resp.status, resp.body[:200])


def test_startup_log_milestones(server: ServerRun) -> None:
    """The lines a reader of SGLang's log (and the tuner's READY_LINE) relies on, in order."""
    log = server.log_text()
    milestones = [
        rf"^{STAMP}server_args=\{{'model_path': ",
        rf"^{STAMP}Load weight begin\. avail mem=[\d.]+ GB$",
        rf"^{STAMP}Load weight end\. .*type=LlamaForCausalLM, .*avail mem=[\d.]+ GB, mem usage=[\d.]+ GB\.$",
        rf"^{STAMP}KV Cache is allocated\. .*#tokens: {POOL_TOKENS}, K size: [\d.]+ GB, V size: [\d.]+ GB$",
        rf"^{STAMP}max_total_num_tokens={POOL_TOKENS}, chunked_prefill_size=\d+, max_prefill_tokens=\d+, "
        rf"max_running_requests=\d+, context_len={CONTEXT}, ",
        rf"^{STAMP}INFO:     Started server process \[{server.proc.pid}\]$",
        rf"^{STAMP}INFO:     Uvicorn running on http://127\.0\.0\.1:{server.port} \(Press CTRL\+C to quit\)$",
        rf"^{STAMP}{re.escape(sglang.READY_LINE)}$",
    ]
    positions = []
    for pattern in milestones:
        m = re.search(pattern, log, re.M)
        assert m, f"no line matches {pattern!r}"
        positions.append(m.start())
    assert positions == sorted(positions), "milestones out of order"


def test_serving_log_lines(server: ServerRun) -> None:
    """Prefill and decode batch lines (every --decode-log-interval = 40 decode steps)."""
    assert gen(server, n_prompt=7, n_out=48).status == 200
    log = server.wait_log("Decode batch, ")
    prefill = (
        rf"^{STAMP}Prefill batch, #new-seq: \d+, #new-token: \d+, #cached-token: \d+, token usage: [\d.]+, "
        r"#running-req: \d+, #queue-req: \d+, "
    )
    decode = (
        rf"^{STAMP}Decode batch, #running-req: \d+, #token: \d+, token usage: [\d.]+, .*"
        r"gen throughput \(token/s\): [\d.]+, #queue-req: \d+"
    )
    assert re.search(prefill, log, re.M), "no Prefill batch line"
    assert re.search(decode, log, re.M), "no Decode batch line"


# ------------------------------------------------------------------------------------ /generate


def test_generate_non_streamed(server: ServerRun) -> None:
    resp = gen(server, n_prompt=6, n_out=5)
    assert resp.status == 200 and resp.content_type.startswith("application/json")
    body = resp.json()
    assert set(body) == {"text", "output_ids", "meta_info"}
    assert isinstance(body["text"], str) and body["text"]
    assert len(body["output_ids"]) == 5 and all(type(i) is int for i in body["output_ids"])
    meta = body["meta_info"]
    assert set(meta) == META_FULL
    assert isinstance(meta["id"], str) and HEX_ID.fullmatch(meta["id"])
    assert meta["finish_reason"] == {"type": "length", "length": 5}
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (6, 5)
    assert type(meta["cached_tokens"]) is int and 0 <= meta["cached_tokens"] < 6
    assert meta["cached_tokens_details"] is None or set(meta["cached_tokens_details"]) == {"device", "host"}
    assert (meta["weight_version"], meta["num_retractions"], meta["reasoning_tokens"], meta["dp_rank"]) == (
        "default", 0, 0, None
    )  # fmt: skip
    assert meta["weight_versions"] == [{"version": "default", "start": 0, "end": 5}]
    assert isinstance(meta["e2e_latency"], float) and meta["e2e_latency"] > 0
    assert isinstance(meta[META_SENT_TS], float) and abs(meta[META_SENT_TS] - time.time()) < 60


def test_generate_streamed(server: ServerRun) -> None:
    events, last = chunks(gen(server, n_prompt=5, n_out=6, stream=True))
    assert last == "[DONE]"
    assert 1 <= len(events) <= 6
    text, ids, count = "", list[int](), 0
    for i, chunk in enumerate(events):
        final = i == len(events) - 1
        assert set(chunk) == {"text", "output_ids", "meta_info"}
        meta = chunk["meta_info"]
        assert META_BASE <= set(meta) <= META_FULL, set(meta) ^ META_FULL
        assert ("e2e_latency" in meta) == final and ("weight_versions" in meta) == final
        assert meta["prompt_tokens"] == 5
        # cumulative: each chunk carries everything so far
        assert chunk["text"].startswith(text) and chunk["output_ids"][: len(ids)] == ids
        assert meta["completion_tokens"] == len(chunk["output_ids"]) >= count
        text, ids, count = chunk["text"], chunk["output_ids"], meta["completion_tokens"]
        assert meta["finish_reason"] == ({"type": "length", "length": 6} if final else None)
    assert META_SENT_TS in events[0]["meta_info"]
    assert count == 6


def test_generate_input_ids(server: ServerRun) -> None:
    resp = server.post("/generate", {"input_ids": [5, 6, 7, 8], "sampling_params": {"max_new_tokens": 2}})
    assert resp.status == 200
    meta = resp.json()["meta_info"]
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (4, 2)


def test_zero_max_tokens(server: ServerRun) -> None:
    """0 new tokens: /generate and chat answer an empty completion; /v1/completions refuses it."""
    body = gen(server, n_out=0).json()
    assert (body["text"], body["output_ids"]) == ("", [])
    assert body["meta_info"]["finish_reason"] == {"type": "length", "length": 0}
    chat = server.post("/v1/chat/completions", openai_body(True, 3, 0))
    assert chat.status == 200, chat.body[:300]
    out = chat.json()
    assert out["usage"]["completion_tokens"] == 0 and out["choices"][0]["message"]["content"] == ""
    openai_error(
        server.post("/v1/completions", openai_body(False, 3, 0)),
        400,
        "Bad Request",
        "max_tokens must be positive",
    )


# ------------------------------------------------------------------------------------ OpenAI


def test_completions_non_streamed(server: ServerRun) -> None:
    resp = server.post("/v1/completions", openai_body(False, 7, 4))
    assert resp.status == 200 and resp.content_type.startswith("application/json")
    out = resp.json()
    assert set(out) == OPENAI_TOP
    assert HEX_ID.fullmatch(out["id"]) and out["object"] == "text_completion"
    assert type(out["created"]) is int and out["model"] == "conformance"
    (choice,) = out["choices"]
    assert set(choice) == COMPLETION_CHOICE
    assert (choice["index"], choice["logprobs"], choice["finish_reason"], choice["matched_stop"]) == (
        0, None, "length", None
    )  # fmt: skip
    assert isinstance(choice["text"], str) and choice["text"]
    assert set(out["usage"]) == USAGE_FULL
    assert (out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"], out["usage"]["total_tokens"]) == (
        7, 4, 11
    )  # fmt: skip
    assert out["metadata"]["weight_version"] == "default"


def test_completions_defaults(server: ServerRun) -> None:
    """Without max_tokens a completion is 16 tokens; without model the reply names model "default"."""
    body = openai_body(False, 3, None)
    del body["model"]
    out = server.post("/v1/completions", body).json()
    assert out["usage"]["completion_tokens"] == 16 and out["model"] == "default"


def test_completions_streamed_with_usage(server: ServerRun) -> None:
    body = openai_body(False, 4, 3, stream=True, stream_options={"include_usage": True})
    events, last = chunks(server.post("/v1/completions", body))
    assert last == "[DONE]"
    *deltas, usage = events
    assert 1 <= len(deltas) <= 3
    for i, chunk in enumerate(deltas):
        assert set(chunk) == {"id", "object", "created", "model", "choices", "usage"}
        assert chunk["object"] == "text_completion" and chunk["usage"] is None
        (choice,) = chunk["choices"]
        assert set(choice) == COMPLETION_CHOICE
        assert choice["finish_reason"] == ("length" if i == len(deltas) - 1 else None)
    assert len({c["id"] for c in events}) == 1 and HEX_ID.fullmatch(events[0]["id"])
    assert usage["choices"] == [] and set(usage["usage"]) == USAGE_COMPLETIONS_STREAM
    assert (usage["usage"]["prompt_tokens"], usage["usage"]["completion_tokens"]) == (4, 3)


def test_completions_streamed_without_usage(server: ServerRun) -> None:
    events, last = chunks(server.post("/v1/completions", openai_body(False, 4, 2, stream=True)))
    assert last == "[DONE]"
    assert events and all(c["usage"] is None and len(c["choices"]) == 1 for c in events)
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_non_streamed(server: ServerRun) -> None:
    resp = server.post("/v1/chat/completions", openai_body(True, 5, 3))
    assert resp.status == 200 and resp.content_type.startswith("application/json")
    out = resp.json()
    assert set(out) == OPENAI_TOP
    assert (
        HEX_ID.fullmatch(out["id"]) and out["object"] == "chat.completion" and out["model"] == "conformance"
    )
    (choice,) = out["choices"]
    assert set(choice) == CHAT_CHOICE and choice["finish_reason"] == "length"
    msg = choice["message"]
    assert set(msg) == {"role", "content", "reasoning_content"}
    assert msg["role"] == "assistant" and isinstance(msg["content"], str) and msg["reasoning_content"] is None
    assert set(out["usage"]) == USAGE_FULL
    assert (out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]) == (5 + CHAT_EXTRA_TOKENS, 3)


def test_chat_streamed_with_usage(server: ServerRun) -> None:
    body = openai_body(True, 4, 3, stream=True, stream_options={"include_usage": True})
    events, last = chunks(server.post("/v1/chat/completions", body))
    assert last == "[DONE]"
    first, *content, finish, usage = events
    for chunk in (first, *content, finish):
        assert set(chunk) == {"id", "object", "created", "model", "choices"}
        assert chunk["object"] == "chat.completion.chunk"
        (choice,) = chunk["choices"]
        assert set(choice) == CHAT_CHUNK_CHOICE
    assert first["choices"][0]["delta"] == {"reasoning_content": None, "role": "assistant", "content": ""}
    assert 1 <= len(content) <= 3
    for chunk in content:
        delta = chunk["choices"][0]["delta"]
        assert set(delta) == {"reasoning_content", "content"} and chunk["choices"][0]["finish_reason"] is None
    assert finish["choices"][0]["delta"] == {"reasoning_content": None}
    assert finish["choices"][0]["finish_reason"] == "length"
    assert set(usage) == {"id", "object", "created", "model", "choices", "usage"} and usage["choices"] == []
    assert set(usage["usage"]) == USAGE_FULL
    assert (usage["usage"]["prompt_tokens"], usage["usage"]["completion_tokens"]) == (
        4 + CHAT_EXTRA_TOKENS,
        3,
    )
    assert len({c["id"] for c in events}) == 1


def test_chat_streamed_without_usage(server: ServerRun) -> None:
    events, last = chunks(server.post("/v1/chat/completions", openai_body(True, 4, 2, stream=True)))
    assert last == "[DONE]"
    assert all("usage" not in c and len(c["choices"]) == 1 for c in events)
    assert events[-1]["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------------------------ info


@pytest.mark.parametrize("path", ["/server_info", "/get_server_info"])
def test_server_info(server: ServerRun, path: str) -> None:
    resp = server.get(path)
    assert resp.status == 200 and resp.content_type.startswith("application/json")
    info = resp.json()
    # the resolved arguments (flag names), as SGLang's ServerArgs holds them
    for key, value in {
        "model_path": server.model_path, "served_model_name": server.model_path, "host": "127.0.0.1",
        "port": server.port, "mem_fraction_static": 0.1, "max_total_tokens": POOL_TOKENS,
        "schedule_policy": "fcfs", "attention_backend": "torch_native", "sampling_backend": "pytorch",
        "kv_cache_dtype": "auto", "max_running_requests": None, "context_length": None, "tp_size": 1,
        "disable_radix_cache": False, "enable_metrics": False, "skip_server_warmup": False,
        "allow_auto_truncate": False, "incremental_streaming_output": False, "decode_log_interval": 40,
        "max_prefill_tokens": 16384, "schedule_conservativeness": 1.0, "num_continuous_decode_steps": 1,
        "device": "cpu", "dtype": "float32",
    }.items():  # fmt: skip
        assert key in info and info[key] == value, (key, info.get(key, "<missing>"), value)
    assert type(info["chunked_prefill_size"]) is int and type(info["random_seed"]) is int
    # what the server adds to them
    assert info["version"] == VERSION and info["status"] == "ready"
    assert info["max_total_num_tokens"] == POOL_TOKENS and info["max_req_input_len"] == MAX_REQ_INPUT_LEN
    assert isinstance(info["launch_command"], str) and f"--port {server.port}" in info["launch_command"]
    (state,) = info["internal_states"]
    assert state["effective_max_running_requests_per_dp"] > 0
    assert isinstance(state["last_gen_throughput"], float)
    assert state["memory_usage"]["token_capacity"] == POOL_TOKENS


def test_server_memory_as_the_tuner_reads_it(server: ServerRun, kind: str) -> None:
    """tuner.loadgen.telemetry reads /server_info's gpu_memory: a simulator-only figure (deliberate, see docs);
    real SGLang has none and the reader must say so rather than fail."""
    sample = fetch_server_memory(server.url)
    if kind == REAL:
        assert sample is None
    else:
        assert sample is not None and sample.source == "simulator" and sample.memory_used_mib > 0


def test_server_info_aliases_agree(server: ServerRun) -> None:
    a, b = server.get("/server_info").json(), server.get("/get_server_info").json()
    assert set(a) == set(b)


def test_model_info(server: ServerRun) -> None:
    info = server.get("/model_info").json()
    assert {
        "model_path": info.get("model_path"), "tokenizer_path": info.get("tokenizer_path"),
        "served_model_name": info.get("served_model_name"), "is_generation": info.get("is_generation"),
        "preferred_sampling_params": info.get("preferred_sampling_params", "<missing>"),
        "weight_version": info.get("weight_version"), "model_type": info.get("model_type"),
        "architectures": info.get("architectures"),
    } == {
        "model_path": server.model_path, "tokenizer_path": server.model_path,
        "served_model_name": server.model_path, "is_generation": True, "preferred_sampling_params": None,
        "weight_version": "default", "model_type": "llama", "architectures": ["LlamaForCausalLM"],
    }  # fmt: skip
    assert server.get("/get_model_info").json() == info


def test_v1_models(server: ServerRun) -> None:
    out = server.get("/v1/models").json()
    assert set(out) == {"object", "data"} and out["object"] == "list"
    (model,) = out["data"]
    assert set(model) == {"id", "object", "created", "owned_by", "root", "parent", "max_model_len"}
    assert (model["id"], model["object"], model["owned_by"], model["root"], model["parent"]) == (
        server.model_path, "model", "sglang", server.model_path, None
    )  # fmt: skip
    assert model["max_model_len"] == CONTEXT and type(model["created"]) is int


# ------------------------------------------------------------------------------------ errors

ENDPOINTS = ["/generate", "/v1/completions", "/v1/chat/completions"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_malformed_json(server: ServerRun, path: str) -> None:
    resp = server.post(path, raw=b'{"text": oops')
    openai_error(resp, 400, "Bad Request", "validation error", "JSON decode error")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_not_an_object(server: ServerRun, path: str) -> None:
    resp = server.post(path, raw=b"[1, 2]")
    if path == "/v1/chat/completions":  # SGLang 0.5.23's chat handler fails on it: a bare 500
        assert (resp.status, resp.content_type, resp.body) == (
            500, "text/plain; charset=utf-8", b"Internal Server Error"
        )  # fmt: skip
    else:
        openai_error(resp, 400, "Bad Request", "validation error", "Input should be a")


def test_wrong_field_types(server: ServerRun) -> None:
    openai_error(
        server.post("/generate", {"text": 5}), 400, "Bad Request", "validation error", "valid string"
    )
    openai_error(server.post("/v1/completions", {"prompt": 5}), 400, "Bad Request", "validation error")
    openai_error(
        server.post("/v1/chat/completions", {"messages": "the", "max_tokens": 2}),
        400,
        "Bad Request",
        "validation error",
        "Input should be a valid list",
    )


@pytest.mark.parametrize("path", ENDPOINTS)
def test_content_type_not_json(server: ServerRun, path: str) -> None:
    """curl -d sends application/x-www-form-urlencoded: SGLang refuses it, valid JSON or not."""
    body = {"text": "the", "prompt": "the", "messages": [{"role": "user", "content": "the"}], "max_tokens": 1}
    resp = server.post(path, raw=json.dumps(body).encode(), content_type="application/x-www-form-urlencoded")
    needle = "Input should be a dictionary" if path == "/generate" else "Unsupported Media Type"
    openai_error(resp, 400, "Bad Request", needle)


def test_missing_prompt(server: ServerRun) -> None:
    generate_error(
        server.post("/generate", {"sampling_params": {"max_new_tokens": 2}}),
        400,
        "Either text, input_ids or input_embeds should be provided.",
    )
    for path, field in (("/v1/completions", "prompt"), ("/v1/chat/completions", "messages")):
        resp = server.post(path, {"model": "x", "max_tokens": 2})
        openai_error(resp, 400, "Bad Request", "validation error", "Field required", f"'{field}'")


def test_negative_max_new_tokens(server: ServerRun) -> None:
    generate_error(gen(server, n_out=-1), 400, "max_new_tokens must be at least 0, got -1.")
    openai_error(
        server.post("/v1/completions", openai_body(False, 3, -1)),
        400,
        "Bad Request",
        "max_tokens must be positive",
    )
    openai_error(
        server.post("/v1/chat/completions", openai_body(True, 3, -1)),
        400,
        "BadRequestError",
        "max_new_tokens must be at least 0, got -1.",
    )


def _too_long(n: int) -> str:
    return f"The input ({n} tokens) is longer than the model's context length ({CONTEXT} tokens)."


def _over_pool(n: int) -> str:
    return (
        f"Input length ({n} tokens) exceeds the maximum allowed length ({MAX_REQ_INPUT_LEN} tokens). "
        "Use a shorter input or enable --allow-auto-truncate."
    )


def _refused_on_every_route(server: ServerRun, n: int, message: Callable[[int], str]) -> None:
    """A prompt of ``n`` tokens is refused with 400 and ``message(prompt tokens)`` on all three routes."""
    generate_error(gen(server, n_prompt=n, n_out=2), 400, message(n))
    for chat, tokens in ((False, n), (True, n + CHAT_EXTRA_TOKENS)):
        route = "/v1/chat/completions" if chat else "/v1/completions"
        openai_error(server.post(route, openai_body(chat, n, 2)), 400, "BadRequestError", message(tokens))


def test_prompt_longer_than_context(server: ServerRun) -> None:
    _refused_on_every_route(server, CONTEXT + 904, _too_long)


def test_prompt_longer_than_kv_pool(server: ServerRun) -> None:
    """Shorter than the context but not below the pool's limit: the scheduler refuses it."""
    _refused_on_every_route(server, MAX_REQ_INPUT_LEN + 958, _over_pool)


def test_prompt_plus_output_longer_than_context(server: ServerRun) -> None:
    n, out = 100, CONTEXT
    message = (
        f"Requested token count exceeds the model's maximum context length of {CONTEXT} tokens. You requested a "
        f"total of {n + out} tokens: {n} tokens from the input messages and {out} tokens for the completion. "
        "Please reduce the number of tokens in the input messages or the completion to fit within the limit."
    )
    generate_error(gen(server, n_prompt=n, n_out=out), 400, message)
    openai_error(server.post("/v1/completions", openai_body(False, n, out)), 400, "BadRequestError", message)


def test_output_clipped_to_the_kv_pool(server: ServerRun) -> None:
    """A prompt that fits, with more new tokens than the pool holds: served, the output clipped."""
    n, out = MAX_REQ_INPUT_LEN - 42, 100
    expected = min(out, MAX_REQ_LEN - n - 1, POOL_TOKENS - n - 2)
    resp = gen(server, n_prompt=n, n_out=out)
    assert resp.status == 200, resp.body[:300]
    meta = resp.json()["meta_info"]
    assert (meta["prompt_tokens"], meta["completion_tokens"]) == (n, expected)
    assert meta["finish_reason"] == {"type": "length", "length": expected}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_streamed_request_too_long_for_the_context(server: ServerRun, path: str) -> None:
    """/generate streams the validation error as an event (HTTP 200); the OpenAI routes answer 400."""
    n = CONTEXT + 4
    chat = path.endswith("chat/completions")
    if path == "/generate":
        resp = gen(server, n_prompt=n, n_out=2, stream=True)
        events, last = chunks(resp)
        assert last == "[DONE]" and events == [
            {
                "error": {
                    "message": _too_long(n), "type": "invalid_request_error", "code": 400, "retryable": False
                }
            }
        ]  # fmt: skip
    else:
        resp = server.post(path, openai_body(chat, n, 2, stream=True))
        openai_error(resp, 400, "BadRequestError", _too_long(n + (CHAT_EXTRA_TOKENS if chat else 0)))


@pytest.mark.parametrize("path", ENDPOINTS)
def test_streamed_request_too_long_for_the_kv_pool(server: ServerRun, path: str) -> None:
    """The scheduler's refusal reaches a stream after it started: HTTP 200, one event, [DONE]."""
    n = MAX_REQ_INPUT_LEN + 958
    chat = path.endswith("chat/completions")
    if path == "/generate":
        events, last = chunks(gen(server, n_prompt=n, n_out=2, stream=True))
        assert last == "[DONE]"
        (chunk,) = events
        assert (chunk["text"], chunk["output_ids"]) == ("", [0])  # SGLang swaps the prompt for one token
        meta = chunk["meta_info"]
        assert set(meta) == META_FULL
        assert meta["finish_reason"] == {
            "type": "abort", "message": _over_pool(n), "status_code": 400, "err_type": "BadRequestError"
        }  # fmt: skip
        assert (meta["prompt_tokens"], meta["completion_tokens"]) == (1, 1)
    else:
        events, last = chunks(server.post(path, openai_body(chat, n, 2, stream=True)))
        assert last == "[DONE]"
        message = _over_pool(n + (CHAT_EXTRA_TOKENS if chat else 0))
        assert events == [
            {
                "error": {
                    "object": "error",
                    "message": message,
                    "type": "BAD_REQUEST",
                    "param": None,
                    "code": 400,
                }
            }
        ]


def test_unknown_path_and_method(server: ServerRun) -> None:
    resp = server.get("/no_such_path")
    assert (resp.status, resp.json()) == (404, {"detail": "Not Found"})
    resp = server.get("/generate")
    assert (resp.status, resp.json()) == (405, {"detail": "Method Not Allowed"})
    resp = server.post("/health", {})
    assert (resp.status, resp.json()) == (405, {"detail": "Method Not Allowed"})
    resp = server.request("PUT", "/generate", {"text": "the", "sampling_params": {"max_new_tokens": 1}})
    assert resp.status == 200 and resp.json()["meta_info"]["completion_tokens"] == 1
    resp = server.get("/metrics")  # without --enable-metrics
    assert (resp.status, resp.json()) == (404, {"detail": "Not Found"})


# ------------------------------------------------------------------------------------ argparse


def test_unknown_flag_is_rejected_by_argparse(cli: dict[str, CliResult]) -> None:
    r = cli["unknown_flag"]
    assert r.returncode == 2, r.output[-2000:]
    lines = r.output.strip().splitlines()
    assert lines[-1] == "sglang serve: error: unrecognized arguments: --no-such-flag 3"
    assert any(line.startswith("usage: sglang serve [-h] --model-path MODEL_PATH") for line in lines)
    failure = classify(sglang.SIGNATURES, phase=Phase.STARTUP, log_text=r.output, exit=ExitStatus(code=2))
    assert failure.kind is FailureKind.FLAG_REJECTED and failure.matched_lines


def test_bad_choice_is_rejected_by_argparse(cli: dict[str, CliResult]) -> None:
    r = cli["bad_choice"]
    assert r.returncode == 2, r.output[-2000:]
    assert r.output.strip().splitlines()[-1] == (
        "sglang serve: error: argument --schedule-policy: invalid choice: 'bogus' (choose from 'lpm', "
        "'random', 'fcfs', 'dfs-weight', 'lof', 'priority', 'routing-key', 'hrrn', 'shortest-prefill-first')"
    )
    failure = classify(sglang.SIGNATURES, phase=Phase.STARTUP, log_text=r.output, exit=ExitStatus(code=2))
    assert failure.kind is FailureKind.FLAG_REJECTED and failure.matched_lines


# ------------------------------------------------------------------------------------ stop (last)


def test_sigterm_to_main_pid_exits_0_and_frees_the_port(server: ServerRun) -> None:
    """Runs last for each server (it stops the shared one): SIGTERM to the main pid, nothing else."""
    t0 = time.monotonic()
    code = server.terminate_main(timeout=60)
    took = time.monotonic() - t0
    leftovers = server.group_alive(grace=10)
    server.stop()  # reaps whatever is left
    assert code == 0, (code, server.log_text()[-2000:])
    assert took < 30, took
    assert port_free(server.port)
    assert not leftovers, "processes of the server's group outlived its main process"
