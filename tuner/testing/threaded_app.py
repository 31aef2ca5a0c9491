"""A real aiohttp.web server on 127.0.0.1 with its own event loop in a daemon thread, for tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from aiohttp import web


class ThreadedApp:
    """Serves POST ``paths`` with :meth:`_handle`; subclasses say what answering means."""

    paths: Sequence[str] = ("/generate",)

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        assert ready.wait(10), f"{type(self).__name__} did not start"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        for path in self.paths:
            app.router.add_post(path, self._handle)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
