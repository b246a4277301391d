"""The FastAPI application: lifecycle, error mapping, request limits, health and metrics.

`create_app(config)` builds one service; `dieguard serve` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitoring.history import History
from registry import CHAMPION
from service.api import models_status
from service.api import router as api_router
from service.batcher import BatcherClosedError
from service.config import ServiceConfig
from service.dashboard import router as dashboard_router
from service.inputs import InputError
from service.inspection import NoModelError
from service.inspection_log import LogUnavailableError
from service.state import ServiceState

log = logging.getLogger("dieguard.service")
EMBEDDING_FLUSH_S = 2.0


def create_app(config: ServiceConfig) -> FastAPI:
    """One inspection service over `config` (models load when the app starts)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = ServiceState.build(config)
        app.state.service = state
        state.log.start()
        app.state.monitor_history = History(config.log_url, create=False)
        if config.bundle is not None:
            await state.pool.load(CHAMPION, config.bundle)
        else:
            await state.watcher.sync_reporting()
            state.watcher.start()
        flusher = asyncio.get_running_loop().create_task(_flush_embeddings(state))
        try:
            yield
        finally:
            flusher.cancel()
            if state.watcher is not None:
                await state.watcher.stop()
            await asyncio.gather(*state.background, return_exceptions=True)
            await state.pool.close()
            await asyncio.to_thread(_write_embeddings, state)
            await asyncio.to_thread(state.log.close)
            app.state.monitor_history.close()

    app = FastAPI(
        title="dieguard inspection service",
        version="1.0",
        description="Inline die inspection: multimodal defect classification with reasons.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)
    app.include_router(api_router)
    app.include_router(dashboard_router)
    _add_operations(app)
    _add_error_handlers(app)
    return app


def _add_operations(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request):
        """Ready when a champion is loaded (503 with the reason otherwise)."""
        state = request.app.state.service
        body = models_status(state) | {"log": state.log.status()}
        ready = state.pool.get(CHAMPION) is not None
        return JSONResponse(body | {"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        state = request.app.state.service
        status = state.log.status()
        state.metrics.log_buffered.set(status["buffered"])
        state.metrics.log_dropped.set(status["dropped"])
        await _refresh_monitor(state, request.app.state.monitor_history)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def _refresh_monitor(state: ServiceState, history: History) -> None:
    """The monitor's latest figures into the metrics: one query, off the event loop; none
    while the history is absent or unreadable."""
    try:
        latest = await asyncio.to_thread(history.latest)
    except Exception as err:  # the monitor's figures are optional; the scrape goes on
        log.debug("monitor history unreadable: %s", err)
        latest = {}
    state.metrics.monitor.update(latest)


def _add_error_handlers(app: FastAPI) -> None:
    def refused(request: Request, status: int, detail, **extra) -> JSONResponse:
        service = getattr(request.app.state, "service", None)
        if service is not None:
            service.metrics.rejected.labels(str(status)).inc()
        return JSONResponse({"detail": detail, **extra}, status_code=status)

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError):
        return refused(request, err.status, err.reason, field=err.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in err.errors()]
        return refused(request, 422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        response = refused(request, err.status_code, err.detail)
        response.headers.update(err.headers or {})
        return response

    @app.exception_handler(NoModelError)
    async def no_model(request: Request, err: NoModelError):
        return refused(request, 503, f"not ready: {err}")

    @app.exception_handler(LogUnavailableError)
    async def log_down(request: Request, err: LogUnavailableError):
        return refused(request, 503, f"the inspection log is unavailable, retry: {err}")

    @app.exception_handler(BatcherClosedError)
    async def model_swapped(request: Request, err: BatcherClosedError):
        return refused(request, 503, f"retry: {err}")


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, by header or by counting."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLargeError
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLargeError:
            await _too_large(send, self.max_bytes)


class _TooLargeError(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = f'{{"detail": "request body over {limit} bytes"}}'.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _flush_embeddings(state: ServiceState) -> None:
    while True:
        await asyncio.sleep(EMBEDDING_FLUSH_S)
        await asyncio.to_thread(_write_embeddings, state)


def _write_embeddings(state: ServiceState) -> None:
    """Add the inspected dies' embeddings to the similar-defect index, in one write per model."""
    rows, state.pending_embeddings = state.pending_embeddings, []
    by_version: dict[str, list] = {}
    for row in rows:
        by_version.setdefault(row.pop("model_version"), []).append(row)
    for version, batch in by_version.items():
        try:
            state.similar.add(version, batch)
        except Exception as err:  # the index is a convenience; serving goes on
            log.error("could not index %d embeddings of model v%s: %s", len(batch), version, err)
