"""Servers that misbehave on the wire: the benchmark client records failed or stalled requests and never
raises. Each server is a real aiohttp server on 127.0.0.1 that answers ``/generate`` (SGLang's native,
streamed API) its own wrong way."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tuner.loadgen import WorkloadSpec, run_benchmark
from tuner.testing.threaded_app import ThreadedApp

GOOD = b'data: {"text": "a", "meta_info": {"prompt_tokens": 4, "completion_tokens": 1}}\n\n'


class Hostile(ThreadedApp):
    def __init__(self, how: str) -> None:
        self.how = how
        super().__init__()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        if self.how == "garbage-200":
            return web.Response(status=200, body=b"\x00\x01 hello, not an event stream")
        if self.how == "html-500":
            return web.Response(
                status=500, text="<html>Internal Server Error</html>", content_type="text/html"
            )
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.how == "close-mid-stream":
            await resp.write(GOOD)
            assert request.transport is not None
            request.transport.close()  # the connection drops without the stream's end
            return resp
        if self.how == "malformed-json":
            await resp.write(b'data: {"text": "a", \n\n' + b"data: [DONE]\n\n")
        elif self.how == "non-utf8":
            await resp.write(b'data: \xff\xfe\xfd {"text": "\xc3\x28"}\n\n' + b"data: [DONE]\n\n")
        elif self.how == "never-ends":
            await resp.write(GOOD)
            await asyncio.sleep(3600)  # a chunk, then silence with the connection open
        elif self.how == "only-comments":
            await resp.write(b": keep-alive\n\nevent: ping\n\n")
        elif self.how == "huge-line":
            await resp.write(b"data: " + b"x" * (4 << 20) + b"\n\n")
        await resp.write_eof()
        return resp


@pytest.mark.parametrize(
    "how",
    ["garbage-200", "html-500", "close-mid-stream", "malformed-json", "non-utf8", "never-ends",
     "only-comments", "huge-line"],
)  # fmt: skip
async def test_a_misbehaving_server_gives_failed_requests_not_an_exception(how: str) -> None:
    server = Hostile(how)
    workload = WorkloadSpec(
        input_len=8, output_len=4, num_requests=6, arrival={"kind": "closed", "clients": 2},
        stall_timeout_s=2, request_timeout_s=10,
    )  # fmt: skip
    result = await asyncio.wait_for(run_benchmark(server.url, workload), timeout=60)
    assert (
        result.failed + result.completed == len([r for r in result.records if not r.warmup]) or result.stalled
    )
    if how == "never-ends":
        assert result.stalled
    else:
        # nothing a broken server sends counts as a completed request; each failure says what it was
        assert result.error_rate == 1.0 and result.completed == 0 and result.output_tokens == 0
        assert all(r.error and len(r.error) < 400 for r in result.records)
