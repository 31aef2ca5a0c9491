"""What load to put on a server: the workload and SLO models embedded in a search-space file.

``WorkloadSpec`` sits under ``workload:`` and ``SLOs`` under ``slos:``. Both forbid unknown
keys so a typo (``num_request``) is an error, not a silently ignored setting; the space loader
turns pydantic's ValidationError into a ConfigError naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TOKENS = 10_000_000  # one prompt's or answer's length
MAX_REQUESTS = 1_000_000  # per trial; a benchmark of more would run for days
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LengthDist(BaseModel):
    """A token-length distribution: ``fixed`` (mean), ``uniform`` (low..high), ``normal`` (mean, std).

    ``normal`` draws are rounded and clipped to ``[low, high]`` (``low`` defaults to 1).

    >>> LengthDist(dist="uniform", low=16, high=64).high
    64
    """

    model_config = _STRICT

    dist: Literal["fixed", "uniform", "normal"]
    mean: float | None = Field(default=None, gt=0, le=MAX_TOKENS)
    low: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    high: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    std: float | None = Field(default=None, ge=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _check_parameters(self) -> LengthDist:
        need = {"fixed": ("mean",), "uniform": ("low", "high"), "normal": ("mean", "std")}[self.dist]
        missing = [name for name in need if getattr(self, name) is None]
        if missing:
            raise ValueError(f"dist '{self.dist}' needs {', '.join(missing)}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


Length = Annotated[int, Field(ge=1, le=MAX_TOKENS)] | LengthDist


class ClosedArrival(BaseModel):
    """Closed loop: ``clients`` workers, each sending its next request when the last one ends."""

    model_config = _STRICT

    kind: Literal["closed"] = "closed"
    clients: int = Field(default=1, ge=1, le=100_000)


class PoissonArrival(BaseModel):
    """Open loop: requests arrive as a Poisson process at ``rate`` per second.

    ``max_concurrency`` caps requests in flight (SGLang's ``--max-concurrency``); an arrival
    beyond the cap waits for a free slot and is timed from when it is actually sent.
    """

    model_config = _STRICT

    kind: Literal["poisson"]
    rate: float = Field(gt=0, le=1e6)
    max_concurrency: int | None = Field(default=None, ge=1)


class TraceArrival(BaseModel):
    """Requests sent when a trace's timestamps say (``dataset: {kind: trace}``), ``speed`` times faster
    (2.0: twice the load); ``max_concurrency`` caps requests in flight as with Poisson arrivals."""

    model_config = _STRICT

    kind: Literal["trace"]
    speed: float = Field(default=1.0, gt=0, le=1e6)
    max_concurrency: int | None = Field(default=None, ge=1)


class SessionsArrival(BaseModel):
    """Multi-turn conversations (``dataset: {kind: sharegpt, turns: all}``): ``clients`` conversations at a
    time, each sending its next turn ``think_time_s`` after the answer to the previous one ended, with
    the conversation so far as its prompt (so a prefix cache sees the reuse real chat traffic has)."""

    model_config = _STRICT

    kind: Literal["sessions"]
    clients: int = Field(default=1, ge=1, le=100_000)
    think_time_s: float = Field(default=1.0, ge=0, le=3600)


Arrival = Annotated[
    ClosedArrival | PoissonArrival | TraceArrival | SessionsArrival, Field(discriminator="kind")
]


class ShareGPTDataset(BaseModel):
    """Requests from a local ShareGPT-format file: a JSON array, or JSONL, of
    ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}``.

    ``turns: first`` sends each conversation's first human turn and asks for as many tokens as its
    reply has (SGLang's ``bench_serving --dataset-name sharegpt``); ``all`` sends every human turn
    with the conversation before it as context. Lengths count words (one token per word on the
    simulator; close to it on real tokenizers). bench_serving's filters: a prompt or reply shorter
    than ``min_len``, a prompt longer than ``max_prompt_len`` or a prompt and reply longer than
    ``max_total_len`` are skipped. ``output_len`` asks every request for that many tokens instead.
    """

    model_config = _STRICT

    kind: Literal["sharegpt"]
    path: str = Field(min_length=1)
    turns: Literal["first", "all"] = "first"
    min_len: int = Field(default=2, ge=1, le=MAX_TOKENS)
    max_prompt_len: int = Field(default=1024, ge=1, le=MAX_TOKENS)
    max_total_len: int = Field(default=2048, ge=2, le=MAX_TOKENS)
    output_len: int | None = Field(default=None, ge=1, le=MAX_TOKENS)


class SharedPrefixDataset(BaseModel):
    """``groups`` system prompts of ``prefix_len`` words; a share ``share`` of the requests starts with
    one of them (chosen uniformly), the rest of each prompt is ``input_len`` words as usual. What makes
    a prefix (radix) cache and longest-prefix-match scheduling pay off, or not (SGLang's
    ``generated-shared-prefix`` dataset)."""

    model_config = _STRICT

    kind: Literal["shared_prefix"]
    groups: int = Field(ge=1, le=100_000)
    prefix_len: int = Field(ge=1, le=MAX_TOKENS)
    share: float = Field(default=1.0, ge=0, le=1)


class TraceDataset(BaseModel):
    """Requests from a JSONL trace, one ``{"timestamp": ms, "input_length": n, "output_length": m}`` a
    line in time order (the Mooncake trace format). Its ``hash_ids`` (optional: the ids of the prompt's
    ``block_size``-token blocks) become shared blocks of words, so requests that share ids share a
    prefix as in the original traffic. With ``arrival: {kind: trace}`` the requests go out at the
    trace's own times; a run longer than the trace replays it again after its last request."""

    model_config = _STRICT

    kind: Literal["trace"]
    path: str = Field(min_length=1)
    block_size: int = Field(default=512, ge=1, le=1_000_000)


Dataset = Annotated[ShareGPTDataset | SharedPrefixDataset | TraceDataset, Field(discriminator="kind")]


class WorkloadSpec(BaseModel):
    """One benchmark's load: API, prompt and output lengths, arrival, size, time limits.

    Exactly one of ``num_requests`` and ``duration_s`` is set. Warm-up requests are sent first,
    are kept in the records (``warmup=True``) and are excluded from every metric.

    >>> w = WorkloadSpec(input_len=128, output_len={"dist": "uniform", "low": 16, "high": 64},
    ...                  arrival={"kind": "poisson", "rate": 4}, num_requests=100)
    >>> w.arrival.rate, len(w.fingerprint())
    (4.0, 16)
    """

    model_config = _STRICT

    api: Literal["generate", "completions", "chat"] = "generate"
    input_len: Length = 256
    output_len: Length = 128
    prompts_file: str | None = None
    dataset: Dataset | None = None  # ShareGPT conversations or shared system prompts (instead of words)
    # the model's tokenizer.json (or its folder): prompt lengths in its tokens, not words (extra: tokenizer)
    tokenizer: str | None = Field(default=None, min_length=1)
    # For /generate only: send random token ids in [0, random_ids_vocab) instead of words
    # (SGLang's random-ids dataset); exact prompt lengths on a real tokenizer.
    random_ids_vocab: int | None = Field(default=None, ge=2)
    arrival: Arrival = Field(default_factory=ClosedArrival)
    num_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    duration_s: float | None = Field(default=None, gt=0, le=86_400)
    warmup_requests: int = Field(default=0, ge=0, le=MAX_REQUESTS)
    seed: int = 0
    request_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    stall_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    window_requests: int = Field(default=50, ge=1, le=MAX_REQUESTS)
    # Ask for exactly output_len tokens (SGLang/llama.cpp/vLLM ``ignore_eos``). Servers that refuse
    # unknown request fields (transformers serve) need false; exact lengths then come from the model.
    ignore_eos: bool = True

    @model_validator(mode="after")
    def _check_size(self) -> WorkloadSpec:
        if (self.num_requests is None) == (self.duration_s is None):
            raise ValueError("set exactly one of num_requests and duration_s")
        if self.random_ids_vocab is not None and self.api != "generate":
            raise ValueError("random_ids_vocab needs api 'generate' (the OpenAI APIs take text)")
        sources = [n for n in ("prompts_file", "random_ids_vocab", "dataset") if getattr(self, n) is not None]
        if len(sources) > 1:
            raise ValueError(f"{' and '.join(sources)} both say where prompts come from; keep one")
        if isinstance(self.arrival, SessionsArrival) and not (
            isinstance(self.dataset, ShareGPTDataset) and self.dataset.turns == "all"
        ):
            raise ValueError(
                "arrival kind 'sessions' sends conversations turn by turn: set dataset {kind: sharegpt, turns: all, path: ...}"
            )
        if isinstance(self.arrival, TraceArrival) and not isinstance(self.dataset, TraceDataset):
            raise ValueError(
                "arrival kind 'trace' replays a trace's timestamps: set dataset {kind: trace, path: ...}"
            )
        return self

    def fingerprint(self) -> str:
        """A stable 16-hex-digit hash of everything that shapes the load, for provenance.

        Includes the prompts file's content (not its path), so the same file moved elsewhere
        gives the same fingerprint and an edited file a new one.
        """
        data = self.model_dump(mode="json", exclude={"prompts_file"})
        if self.prompts_file is not None:
            data["prompts_sha256"] = _file_sha256(self.prompts_file)
        if isinstance(self.dataset, ShareGPTDataset | TraceDataset):
            data["dataset"]["path"] = _file_sha256(self.dataset.path)  # the data, wherever it lies
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{path}"


class SLOs(BaseModel):
    """Service-level objectives, all optional.

    The ``*_p99_ms`` bounds apply to the run's p99 (as constraints) and, per request, to goodput:
    a request counts toward goodput when its own TTFT, TPOT and E2E meet them (SGLang's
    ``--goodput``). ``error_rate`` is the largest tolerated failed/(completed+failed).
    """

    model_config = _STRICT

    ttft_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)
    e2e_p99_ms: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)


def max_output_len(workload: WorkloadSpec) -> int | None:
    """The most tokens one request may ask for (``max_tokens``); ``None`` when unbounded or unknown
    (a normal distribution without ``high``, or a prompts file whose entries set their own)."""
    if workload.prompts_file is not None:
        return None
    if isinstance(workload.dataset, ShareGPTDataset):
        # each reply's own length (bench_serving caps prompt + reply at max_total_len)
        return workload.dataset.output_len or workload.dataset.max_total_len
    if isinstance(workload.dataset, TraceDataset):
        return None  # the trace's own lengths
    spec = workload.output_len
    if isinstance(spec, int):
        return spec
    if spec.dist == "fixed" and spec.mean is not None:
        return max(1, round(spec.mean))
    return spec.high
