"""The OpenAI-compatible routes: ``/v1/completions`` and ``/v1/chat/completions``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from tuner.sim import text
from tuner.sim.api_base import OPENAI_COMPLETIONS_MAX, WEIGHT_VERSION, ApiBase
from tuner.sim.http_errors import Refused, Reply, openai_error, validation_error


class OpenAIApi(ApiBase):
    """``/v1/completions`` and ``/v1/chat/completions``."""

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
