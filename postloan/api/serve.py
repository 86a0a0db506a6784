"""Serve the API and /metrics with uvicorn inside the gateway's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn

from postloan.affairs import JsonAffairsRepository
from postloan.api.app import create_app
from postloan.api.audit import JsonAuditLog
from postloan.api.auth import TokenTable
from postloan.api.context import ApiContext
from postloan.api.logfilter import install_filters
from postloan.config import Config
from postloan.loans.jsonledger import JsonLedger
from postloan.metrics import build_registry
from postloan.notify import JsonTaskRepository
from postloan.risk import JsonRiskRepository
from postloan.store import Store

if TYPE_CHECKING:
    from postloan.gateway import Gateway

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    # The process entry point owns SIGINT and SIGTERM and stops this server
    # itself, so uvicorn must not replace those handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_context(config: Config, store: Store, gateway: Gateway | None) -> ApiContext:
    """Build the API's context from ``[api]``: tokens, repositories and metrics."""
    settings = config.api
    tokens = (
        TokenTable.load(Path(settings.tokens_file))
        if settings.tokens_file
        else TokenTable({})
    )
    state = Path(settings.state_dir)
    risk = JsonRiskRepository(state)
    tasks = JsonTaskRepository(state)
    return ApiContext(
        store=store,
        tokens=tokens,
        ledger=JsonLedger(Path(settings.ledger_dir)),
        risk=risk,
        tasks=tasks,
        audit=JsonAuditLog(Path(settings.audit_file)),
        affairs=JsonAffairsRepository(state / "affairs"),
        registry=build_registry(gateway, firings=risk, tasks=tasks),
    )


class ApiServer:
    """The API on ``[api] host:port`` for the lifetime of an ``async with``."""

    def __init__(self, context: ApiContext, host: str, port: int) -> None:
        app = create_app(context)
        settings = uvicorn.Config(
            app, host=host, port=port, log_config=None, lifespan="off"
        )
        self.server = _Server(settings)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port, useful when ``[api] port`` is 0."""
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def __aenter__(self) -> ApiServer:
        install_filters()
        self._task = asyncio.create_task(self.server.serve(), name="api[http].serve")
        while not self.server.started:
            if self._task.done():
                await self._task  # raises the bind error
                raise RuntimeError("the API server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("API and /metrics listening on port %d", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        log.info("API stopped")
