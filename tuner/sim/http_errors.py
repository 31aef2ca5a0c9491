"""How the simulated server refuses a request, as SGLang 0.5.23's three stages do (FastAPI's
validation, the tokenizer manager, the scheduler): exceptions and the error bodies of each route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


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
