"""Probe prompts for the output-quality gate (``quality:`` in the space): fixed prompts answered
greedily, without streaming, so two configurations' answers can be compared word by word."""

from __future__ import annotations

import random
from typing import Any

import aiohttp

from tuner.loadgen.client import PATHS, Api
from tuner.loadgen.prompts import WORDS


def probe_prompts(count: int, length: int, seed: int) -> list[str]:
    """``count`` prompts of ``length`` words, the same for every trial of a study (seeded)."""
    rng = random.Random(f"{seed}:quality-probes")
    return [" ".join(rng.choices(WORDS, k=length)) for _ in range(count)]


def _body(api: Api, prompt: str, max_tokens: int, model: str | None) -> dict[str, Any]:
    if api == "generate":
        return {"text": prompt, "sampling_params": {"max_new_tokens": max_tokens, "temperature": 0}}
    body: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0, "seed": 0, "stream": False}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if model is not None:
        body["model"] = model
    return body


def _text(api: Api, data: Any) -> str:
    if api == "generate":
        return str((data[0] if isinstance(data, list) else data).get("text", ""))
    choice = data["choices"][0]
    return str(choice["message"]["content"] if api == "chat" else choice["text"])


async def answer_probes(
    base_url: str, api: Api, prompts: list[str], max_tokens: int, model: str | None, timeout_s: float
) -> list[str | None]:
    """Each prompt's greedy answer, one at a time (batching can change greedy results on some kernels);
    ``None`` for a probe the server did not answer."""
    out: list[str | None] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for prompt in prompts:
            try:
                async with session.post(
                    base_url + PATHS[api], json=_body(api, prompt, max_tokens, model)
                ) as resp:
                    data = await resp.json(content_type=None) if resp.status == 200 else None
                out.append(_text(api, data) if data is not None else None)
            except (TimeoutError, aiohttp.ClientError, KeyError, IndexError, TypeError, ValueError):
                out.append(None)
    return out
