"""The FastAPI application: lifecycle, error mapping, request limits, health and metrics.

`create_app(config)` builds one service; `dieguard serve` runs it under uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitoring.history import History
from registry import CHAMPION
from service.api import models_status
from service.api import router as api_router
from service.auth import API_KEY_HEADER, identify
from service.batcher import BatcherClosedError, DeadlineError, OverloadedError
from service.config import ServiceConfig
from service.dashboard import router as dashboard_router
from service.inputs import InputError
from service.inspection import NoModelError, StorageError
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
        await asyncio.to_thread(state.log.replay)
        state.log.start()
        app.state.monitor_history = History(config.log_url, create=False)
        if config.bundle is not None:
            await state.pool.load(CHAMPION, config.bundle)
        else:
            await state.watcher.sync_reporting()
            await state.watcher.load_last_good()
            state.watcher.start()
        flusher = asyncio.get_running_loop().create_task(_flush_embeddings(state))
        try:
            yield
        finally:
            flusher.cancel()
            if state.watcher is not None:
                await state.watcher.stop()
            await state.shadows.drain()
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
    app.add_middleware(ArrivalTime)  # added last: the outermost, the first to see a request
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
        """Ready (200) when a champion is loaded and its model answers, else 503. Without a
        key, the status alone; with one, the models, the model source and the log."""
        state = request.app.state.service
        champion = state.pool.get(CHAMPION)
        ready = champion is not None and not champion.batcher.stalled()
        body = {"ready": ready, "status": "ready" if ready else "not ready"}
        key = await API_KEY_HEADER(request)
        if key and identify(request, key) is not None:
            body |= _readiness_details(state)
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        state = request.app.state.service
        status = state.log.status()
        state.metrics.log_buffered.set(status["buffered"])
        state.metrics.log_dropped.set(status["dropped"])
        await _refresh_monitor(state, request.app.state.monitor_history)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)


def _readiness_details(state: ServiceState) -> dict:
    champion = state.pool.get(CHAMPION)
    fallback = state.watcher.fallback if state.watcher is not None else None
    return models_status(state) | {
        "model_answering": champion is not None and not champion.batcher.stalled(),
        "queued": champion.batcher.queued() if champion is not None else 0,
        "source": fallback or ("bundle folder" if state.config.bundle else "registry"),
        "log": state.log.status(),
    }


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
    def refused(request: Request, status: int, detail, retry: int = 0, **extra) -> JSONResponse:
        service = getattr(request.app.state, "service", None)
        if service is not None:
            service.metrics.rejected.labels(str(status)).inc()
        headers = {"Retry-After": str(retry)} if retry else None
        return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)

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
        log.warning("refused: no model: %s", err)
        return refused(request, 503, "not ready: no champion model is loaded", retry=5)

    @app.exception_handler(LogUnavailableError)
    async def log_down(request: Request, err: LogUnavailableError):
        log.warning("refused: %s", err)
        return refused(request, 503, "the inspection log is unavailable, retry", retry=5)

    @app.exception_handler(BatcherClosedError)
    async def model_swapped(request: Request, err: BatcherClosedError):
        return refused(request, 503, f"retry: {err}", retry=1)

    @app.exception_handler(OverloadedError)
    async def overloaded(request: Request, err: OverloadedError):
        return refused(request, 503, f"overloaded, retry: {err}", retry=1)

    @app.exception_handler(DeadlineError)
    async def too_slow(request: Request, err: DeadlineError):
        return refused(request, 504, f"{err}; the die was not inspected, retry")

    @app.exception_handler(StorageError)
    async def not_stored(request: Request, err: StorageError):
        return refused(request, 503, str(err), retry=5)


class ArrivalTime:
    """Stamp each request with its arrival (`request.state.arrived_at`, perf_counter s)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope.setdefault("state", {})["arrived_at"] = time.perf_counter()
        return await self.app(scope, receive, send)


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
