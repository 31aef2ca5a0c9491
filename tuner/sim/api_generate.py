"""SGLang's native ``/generate`` route (JSON or SSE with cumulative text)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from tuner.sim import text
from tuner.sim.api_base import DEFAULT_MAX_NEW, ApiBase
from tuner.sim.http_errors import Refused, Reply, generate_error, validation_error


class GenerateApi(ApiBase):
    """``/generate``."""

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
