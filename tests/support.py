"""Helpers for tests that run real servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import grpc

from tessera import server


class ServerThread:
    """One service served by the real runtime on a free port, in a thread of its own.

    Tests talk to it through the generated (synchronous) clients, as any
    backend would.
    """

    def __init__(self, build: Callable[[], Any], port: int = 0) -> None:
        self._build = build
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.running: server.Running | None = None
        self.address = ""

    def start(self) -> ServerThread:
        self._thread.start()

        async def boot() -> server.Running:
            return await server.start(self._build(), "127.0.0.1", self._port)

        self.running = asyncio.run_coroutine_threadsafe(boot(), self._loop).result(30)
        self.address = f"127.0.0.1:{self.running.port}"
        return self

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's loop (e.g. to inspect its state)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def stop(self, grace: float = 1.0) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.stop(grace), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def field_of(error: grpc.RpcError) -> str:
    """The field a Tessera error message names (the part before ': ')."""
    details: str = error.details() or ""  # type: ignore[attr-defined]
    return details.split(": ", 1)[0]


def free_port() -> int:
    """A port free right now, for a server that must come back on the same one."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def create_tables(engine: Any, tables: list[Any]) -> None:
    """Create tables that belong to no service's migrations (a test's own prefix).

    The services' own tables come from their Alembic revisions
    (`tessera.migrations.upgrade`); tests that exercise shared plumbing
    (definitions, feed cursors) under a prefix of their own create its
    tables straight from the models.
    """
    from sqlmodel import SQLModel

    SQLModel.metadata.create_all(engine, tables=[model.__table__ for model in tables])


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample a Prometheus endpoint serves, by name and labels."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
