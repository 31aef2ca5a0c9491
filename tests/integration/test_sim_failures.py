"""Each failure mode of the simulator: exit status and log signature, classified as the tuner does."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from tuner.core.failures import ExitStatus, FailureKind, Phase, classify
from tuner.engines import sglang
from tuner.sim.process import SimProcess

# The report's working base on the 5090 (triton attention, pytorch sampling, plain AWQ kernels).
SAFE = [
    "--attention-backend",
    "triton",
    "--sampling-backend",
    "pytorch",
    "--quantization",
    "awq",
    "--sim-noise",
    "0",
]
NO_GRAPH = ["--cuda-graph-backend-decode", "disabled"]


def died(
    args: list[str], *, phase: Phase = Phase.STARTUP, gpu: str = "rtx5090"
) -> tuple[int, str, FailureKind]:
    """Start the simulator, expect it to die on its own; (return code, log, classified kind)."""
    with SimProcess([*args, "--sim-gpu", gpu]) as s:
        rc = s.wait_exit(timeout=30)
        log = s.log_text()
    failure = classify(sglang.SIGNATURES, phase=phase, log_text=log, exit=ExitStatus.from_returncode(rc))
    return rc, log, failure.kind


def test_cuda_graphs_on_sm120_segfault_in_a_child_and_the_tree_is_killed() -> None:
    rc, log, kind = died(SAFE)
    assert rc == -signal.SIGKILL
    assert "Subprocess scheduler_0 crashed with exit code -11" in log
    assert "Capture cuda graph begin" in log and sglang.READY_LINE not in log
    assert kind is FailureKind.SEGFAULT
    # what the user reads: the child's segfault, then the tree's SIGKILL (not a bare "killed by SIGKILL")
    failure = classify(
        sglang.SIGNATURES, phase=Phase.STARTUP, log_text=log, exit=ExitStatus.from_returncode(rc)
    )
    assert failure.summary().startswith(
        "startup; a child process died of SIGSEGV, then the server killed its process tree (SIGKILL); "
    ), failure.summary()


def test_cuda_graphs_work_on_h100() -> None:
    with SimProcess([*SAFE, "--sim-gpu", "h100"]) as s:
        s.wait_ready()
        assert "Capture cuda graph end" in s.log_text()


def test_fp8_kv_cache_on_the_5090_is_cuda_oom() -> None:
    rc, log, kind = died([*SAFE, *NO_GRAPH, "--kv-cache-dtype", "fp8_e5m2"])
    assert rc == -signal.SIGKILL and "torch.OutOfMemoryError: CUDA out of memory" in log
    assert "Scheduler hit an exception" in log
    assert kind is FailureKind.CUDA_OOM


def test_fp8_kv_cache_on_h100_starts_with_twice_the_tokens() -> None:
    sizes = []
    for dtype in ("auto", "fp8_e4m3"):
        with SimProcess(
            [*SAFE, "--sim-gpu", "h100", "--kv-cache-dtype", dtype, "--mem-fraction-static", "0.8"]
        ) as s:
            s.wait_ready()
            sizes.append(json.loads(s.get("/server_info")[1])["max_total_num_tokens"])
    assert sizes[1] == pytest.approx(2 * sizes[0], rel=0.01)


@pytest.mark.parametrize("fraction", ["0.97", "0.5"])
def test_mem_fraction_out_of_range_is_not_enough_memory(fraction: str) -> None:
    # 0.97: nothing left outside the pool; 0.5: the 18 GiB of weights leave no KV pool.
    rc, log, kind = died([*SAFE, *NO_GRAPH, "--mem-fraction-static", fraction])
    assert "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static." in log
    assert rc == -signal.SIGKILL and kind is FailureKind.NOT_ENOUGH_MEMORY


def test_flashinfer_on_sm120_fails_at_start() -> None:
    rc, log, kind = died(["--quantization", "awq", "--sim-noise", "0", *NO_GRAPH])  # auto picks flashinfer
    assert "no kernel image is available" in log and kind is FailureKind.UNSUPPORTED
    assert rc == -signal.SIGKILL


def test_awq_marlin_runs_out_of_memory_at_high_mem_fraction_only() -> None:
    base = ["--attention-backend", "triton", "--sampling-backend", "pytorch", *NO_GRAPH, "--sim-noise", "0"]
    rc, log, kind = died([*base, "--mem-fraction-static", "0.85"])  # auto-switches AWQ to awq_marlin
    assert kind is FailureKind.CUDA_OOM and rc == -signal.SIGKILL
    assert "Load weight begin" in log and "KV Cache is allocated" not in log  # died loading the weights
    with SimProcess([*base, "--mem-fraction-static", "0.7"]) as s:
        s.wait_ready()
        assert json.loads(s.get("/server_info")[1])["quantization"] == "awq_marlin"


def test_unknown_flag_classifies_as_flag_rejected() -> None:
    rc, _, kind = died(["--stream-output"])  # removed in 0.5.20
    assert rc == 2 and kind is FailureKind.FLAG_REJECTED


def _load(
    s: SimProcess, n: int, max_new: int = 32, timeout: float = 30.0, stagger: float = 0.0, words: int = 120
) -> list[int | None]:
    """Send ``n`` concurrent requests of about ``words`` prompt tokens, ``stagger`` s apart; their HTTP
    statuses (None: no answer)."""
    out: list[int | None] = [None] * n

    def one(i: int) -> None:
        try:
            # Distinct first words: no prefix-cache hits between the clients.
            prompt = f"client{i} " + "a b c " * (words // 3)
            body = {"text": prompt, "sampling_params": {"max_new_tokens": max_new}}
            out[i] = s.post("/generate", body, timeout)[0]
        except OSError:
            out[i] = None

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(stagger)
    for t in threads:
        t.join(timeout + 5)
    return out


def test_two_batch_overlap_on_sm120_hangs_under_load_then_the_watchdog_kills_it() -> None:
    with SimProcess([*SAFE, *NO_GRAPH, "--enable-two-batch-overlap", "--watchdog-timeout", "3"]) as s:
        s.wait_ready()  # one request at a time works: warm-up passed
        t0 = time.monotonic()
        statuses = _load(s, 3, timeout=20)
        assert statuses == [None, None, None]  # no answer: hung, then killed
        assert time.monotonic() - t0 >= 2.5
        assert s.wait_exit(10) == -signal.SIGKILL
        assert "Scheduler watchdog timeout" in s.log_text()


def test_mixed_chunk_on_sm120_crashes_under_load() -> None:
    with SimProcess([*SAFE, *NO_GRAPH, "--enable-mixed-chunk"]) as s:
        s.wait_ready()
        # later ones arrive while the first still decodes (512 tokens: seconds, even when a busy machine
        # delays the client's threads): a mixed batch
        _load(s, 3, max_new=512, timeout=20, stagger=0.5)
        assert s.wait_exit(10) == -signal.SIGKILL
        log = s.log_text()
    assert "Scheduler hit an exception" in log
    kind = classify(
        sglang.SIGNATURES, phase=Phase.LOAD, log_text=log, exit=ExitStatus.from_returncode(-9)
    ).kind
    assert kind is FailureKind.CRASHED


def test_activations_out_of_memory_under_load_at_a_very_high_mem_fraction() -> None:
    # 0.945 leaves ~0.1 GiB outside the pool: fine for the warm-up, not for a 2048-token prefill chunk.
    # Prompts of ~2100 tokens fill such a chunk on their own: on a busy machine the clients' requests
    # may arrive one at a time rather than in one batch.
    with SimProcess([*SAFE, *NO_GRAPH, "--mem-fraction-static", "0.945"]) as s:
        s.wait_ready()
        status, _ = s.post("/generate", {"text": "a b c d", "sampling_params": {"max_new_tokens": 2}})
        assert status == 200
        _load(s, 8, max_new=4, timeout=20, words=2100)
        assert s.wait_exit(10) == -signal.SIGKILL
        log = s.log_text()
    kind = classify(
        sglang.SIGNATURES, phase=Phase.LOAD, log_text=log, exit=ExitStatus.from_returncode(-9)
    ).kind
    assert kind is FailureKind.CUDA_OOM


FAST = ["--sim-gpu", "h100", "--sim-model", "qwen2.5-0.5b", "--sim-noise", "0"]


def test_injected_hang_under_load_produces_no_tokens() -> None:
    with SimProcess([*FAST, "--sim-inject", "hang-under-load"]) as s:
        s.wait_ready()
        assert s.post("/generate", {"text": "x", "sampling_params": {"max_new_tokens": 4}})[0] == 200
        assert _load(s, 2, timeout=3) == [None, None]
        assert s.returncode is None  # still up, /health still answers
        assert s.get("/health")[0] == 200


def test_injected_fail_requests_is_healthy_but_failing() -> None:
    with SimProcess([*FAST, "--sim-inject", "fail-requests"]) as s:
        s.wait_ready()
        assert s.get("/health")[0] == 200
        status, body = s.post("/generate", {"text": "x", "sampling_params": {"max_new_tokens": 4}})
        assert status == 503 and json.loads(body)["code"] == 503
        assert s.post("/v1/completions", {"prompt": "x", "max_tokens": 2})[0] == 503


def test_injected_crash_under_load() -> None:
    with SimProcess([*FAST, "--sim-inject", "crash-under-load"]) as s:
        s.wait_ready()
        _load(s, 4, max_new=64, timeout=10)
        assert s.wait_exit(10) == -signal.SIGKILL
        assert "Scheduler hit an exception" in s.log_text()
