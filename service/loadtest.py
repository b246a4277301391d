"""Open-loop load generator for the inspection API: synthetic dies, scheduled posts, reports.

Requests leave at fixed arrival times whether or not earlier ones have returned, so the
measured latency includes any queueing inside the server. Each request is a distinct die.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import httpx
import numpy as np
from PIL import Image

from model.schema import METADATA_COLUMNS
from model.synthetic.images import render_die
from model.synthetic.notes import write_note
from model.synthetic.plan import SplitSizes, plan_dies
from model.synthetic.process import draw_process_logs

INSPECT_PATH = "/api/v1/inspect"
OK, TIMEOUT, CONNECTION, INVALID_RESPONSE = "ok", "timeout", "connection", "invalid_response"
WARMUP_S = 2.0


@dataclass(frozen=True)
class DiePayload:
    """One die as a station sends it: PNG bytes, raw process log, note and metadata."""

    die_id: str
    wafer_id: str
    image: bytes
    process_log: dict[str, float]
    note: str
    metadata: dict


@dataclass(frozen=True)
class Outcome:
    """One request: its result kind ("ok", an HTTP status, "timeout", ...) and timings."""

    kind: str
    latency_ms: float
    server_latency_ms: float | None = None
    model_version: str | None = None
    lag_ms: float = 0.0  # how late the request left against its scheduled time
    inspection_id: str | None = None  # what a 200 acknowledged
    retry_after: str | None = None  # the Retry-After header of a refusal, when it had one


@dataclass
class LoadReport:
    """What one load run achieved; latencies are client side over the ok requests."""

    rate: float
    stations: int
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    throughput: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    server_latency_ms: float | None
    max_lag_ms: float = 0.0
    model_versions: dict[str, int] = field(default_factory=dict)
    acknowledged: list[str] = field(default_factory=list, repr=False)  # ids answered 200
    outcomes: list[Outcome] = field(default_factory=list, repr=False)  # one per request

    @property
    def error_rate(self) -> float:
        return sum(self.errors.values()) / self.sent if self.sent else 0.0

    def meets(self, p99_limit_ms: float = 200.0, max_error_rate: float = 0.0) -> bool:
        """True when requests were served, p99 is within the limit and errors are few enough."""
        if self.ok == 0 or self.p99_ms is None:
            return False
        return self.p99_ms <= p99_limit_ms and self.error_rate <= max_error_rate

    def as_dict(self) -> dict:
        kept = {k: v for k, v in asdict(self).items() if k not in ("acknowledged", "outcomes")}
        return kept | {"error_rate": self.error_rate}

    def format(self) -> str:
        """A short terminal summary of the run."""
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        share = 100.0 * self.ok / self.sent if self.sent else 0.0
        return "\n".join(
            [
                f"rate {self.rate:g}/s over {self.stations} stations, {self.duration_s:.2f} s: "
                f"sent {self.sent}, ok {self.ok} ({share:.1f} %), errors: {errors}",
                f"throughput {self.throughput:.1f}/s; latency ms p50 {_ms(self.p50_ms)} "
                f"p95 {_ms(self.p95_ms)} p99 {_ms(self.p99_ms)} max {_ms(self.max_ms)}; "
                f"server mean {_ms(self.server_latency_ms)}; max send lag {self.max_lag_ms:.1f}",
            ]
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(reports: list[LoadReport], p99_limit_ms: float = 200.0) -> str:
    """One row per run (as from find_max_rate), with whether each met the limit."""
    head = f"{'rate/s':>8} {'sent':>6} {'ok':>6} {'err':>5} {'tput/s':>8} "
    head += f"{'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'server':>7}  meets"
    rows = [head]
    for r in reports:
        rows.append(
            f"{r.rate:>8g} {r.sent:>6} {r.ok:>6} {sum(r.errors.values()):>5} "
            f"{r.throughput:>8.1f} {_ms(r.p50_ms):>7} {_ms(r.p95_ms):>7} {_ms(r.p99_ms):>7} "
            f"{_ms(r.max_ms):>7} {_ms(r.server_latency_ms):>7}  "
            f"{'yes' if r.meets(p99_limit_ms) else 'no'}"
        )
    return "\n".join(rows)


def build_report(
    rate: float, stations: int, elapsed_s: float, outcomes: list[Outcome]
) -> LoadReport:
    """Summarise outcomes into a LoadReport.

    Args:
        rate: the target rate (requests per second, all stations together).
        stations: number of stations.
        elapsed_s: wall time from the first scheduled send to the last response.
        outcomes: one per request sent.
    Returns:
        LoadReport with percentiles (numpy, linear interpolation) over the ok latencies.
    """
    ok = [o for o in outcomes if o.kind == OK]
    errors = Counter(o.kind for o in outcomes if o.kind != OK)
    versions = Counter(o.model_version for o in ok if o.model_version is not None)
    lat = [o.latency_ms for o in ok]
    p50 = p95 = p99 = peak = None
    if lat:  # the 100th percentile is the maximum
        p50, p95, p99, peak = np.percentile(lat, [50, 95, 99, 100], method="linear").tolist()
    server = [o.server_latency_ms for o in ok if o.server_latency_ms is not None]
    return LoadReport(
        rate=float(rate),
        stations=stations,
        duration_s=float(elapsed_s),
        sent=len(outcomes),
        ok=len(ok),
        errors=dict(sorted(errors.items())),
        throughput=len(ok) / elapsed_s if elapsed_s > 0 else 0.0,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=peak,
        server_latency_ms=float(np.mean(server)) if server else None,
        max_lag_ms=max((o.lag_ms for o in outcomes), default=0.0),
        model_versions=dict(sorted(versions.items())),
        acknowledged=[o.inspection_id for o in ok if o.inspection_id],
        outcomes=list(outcomes),
    )


def make_dies(n: int, seed: int = 0) -> list[DiePayload]:
    """Generate `n` synthetic dies with the data set's generator, each encoded once as PNG.

    Args:
        n: number of dies (at least 1).
        seed: the dies are a function of this seed.
    Returns:
        DiePayloads with unique die ids; a sensor dropout is an absent process-log key.
    """
    if n < 1:
        raise ValueError(f"need at least one die, got n={n}")
    plan = plan_dies(SplitSizes(train=n, val=0, test=0), seed)
    values, causes = draw_process_logs(plan, seed + 1)
    values = values.set_index("die_id")
    dies = []
    for row, cause in zip(plan.to_dict("records"), causes):
        rng = np.random.default_rng([row["die_seed"], 1])  # the generator's note stream
        note = write_note(row["label"], cause, rng) if row["has_note"] else ""
        log = values.loc[row["die_id"]]
        dies.append(
            DiePayload(
                die_id=row["die_id"],
                wafer_id=row["wafer_id"],
                image=_png(render_die(row)),
                process_log={k: float(v) for k, v in log.items() if math.isfinite(v)},
                note=note,
                metadata={k: row[k] for k in METADATA_COLUMNS[2:]},
            )
        )
    return dies


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def endpoint(url: str) -> str:
    """The inspect URL for a service base URL (a URL already ending in the path is kept)."""
    url = url.rstrip("/")
    return url if url.endswith(INSPECT_PATH) else url + INSPECT_PATH


def _die_for(dies: list[DiePayload], k: int) -> DiePayload:
    """Request k's die: payloads cycle, and each pass after the first gets a suffixed id."""
    die = dies[k % len(dies)]
    round_ = k // len(dies)
    return die if round_ == 0 else replace(die, die_id=f"{die.die_id}-r{round_}")


def inspect_form(die: DiePayload) -> tuple[dict, dict]:
    """(data, files) of a die's multipart POST /api/v1/inspect request."""
    form = {
        "process_log": json.dumps(die.process_log),
        "operator_notes": die.note,
        "wafer_id": die.wafer_id,
        "die_id": die.die_id,
        "metadata": json.dumps(die.metadata),
    }
    return form, {"image": (f"{die.die_id}.png", die.image, "image/png")}


async def _send(client, url: str, die: DiePayload, timeout_s: float, due: float) -> Outcome:
    """Post one die; `due` is its scheduled loop time, to record how late it left."""
    lag_ms = max(0.0, asyncio.get_running_loop().time() - due) * 1000.0
    form, files = inspect_form(die)
    start = time.perf_counter()
    retry_after = None
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(url, data=form, files=files)
        kind = OK if response.status_code == 200 else str(response.status_code)
        retry_after = response.headers.get("retry-after")
    except (TimeoutError, httpx.TimeoutException):
        kind = TIMEOUT
    except httpx.TransportError:
        kind = CONNECTION
    latency_ms = (time.perf_counter() - start) * 1000.0
    if kind != OK:
        return Outcome(kind, latency_ms, lag_ms=lag_ms, retry_after=retry_after)
    try:
        body = response.json()
        server, version = body.get("latency_ms"), body.get("model_version")
        inspection_id = body.get("inspection_id")
    except (ValueError, AttributeError):
        return Outcome(INVALID_RESPONSE, latency_ms, lag_ms=lag_ms)
    server = float(server) if isinstance(server, int | float) else None
    version = None if version is None else str(version)
    return Outcome(OK, latency_ms, server, version, lag_ms, inspection_id)


async def run_load(
    url: str,
    api_key: str,
    rate: float,
    duration_s: float,
    stations: int = 5,
    dies: list[DiePayload] | None = None,
    timeout_s: float = 5.0,
    first_request: int = 0,
) -> LoadReport:
    """Post dies at fixed arrival times (open loop) and report latency and errors.

    Args:
        url: the service base URL or the full inspect URL.
        api_key: sent as X-API-Key by every station.
        rate: target requests per second, all stations together.
        duration_s: length of the schedule; round(rate * duration_s) requests are sent.
        stations: concurrent clients; request k goes to station k % stations, at k / rate s.
        dies: payloads to cycle through (default: 64 generated dies).
        timeout_s: per-request limit, send to full response.
        first_request: index of the first request in the payload cycle (keeps die ids
            distinct over several runs).
    Returns:
        LoadReport; failures are counted by kind, never raised.
    """
    if rate <= 0 or duration_s <= 0 or stations < 1:
        raise ValueError(f"need rate > 0, duration_s > 0, stations >= 1: {rate}, {duration_s}")
    dies = dies or make_dies(64)
    target, n = endpoint(url), round(rate * duration_s)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    clients = [
        httpx.AsyncClient(headers={"X-API-Key": api_key}, limits=limits, trust_env=False)
        for _ in range(stations)
    ]
    try:
        outcomes, elapsed = await _dispatch(
            clients, target, dies, rate, n, timeout_s, first_request
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return build_report(rate, stations, elapsed, outcomes)


async def _dispatch(clients, url, dies, rate, n, timeout_s, first) -> tuple[list[Outcome], float]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for k in range(n):
        due = t0 + k / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        client = clients[k % len(clients)]
        tasks.append(
            asyncio.create_task(_send(client, url, _die_for(dies, first + k), timeout_s, due))
        )
    outcomes = list(await asyncio.gather(*tasks))
    return outcomes, loop.time() - t0


async def find_max_rate(
    url: str,
    api_key: str,
    rates: list[float],
    duration_s: float,
    stations: int = 5,
    p99_limit_ms: float = 200.0,
    max_error_rate: float = 0.0,
    dies: list[DiePayload] | None = None,
    timeout_s: float = 5.0,
    warmup_s: float = WARMUP_S,
) -> tuple[float | None, list[LoadReport]]:
    """Step through rates in increasing order until one fails its limits.

    Args:
        url, api_key, duration_s, stations, dies, timeout_s: as for run_load.
        rates: candidate rates (sorted here).
        p99_limit_ms, max_error_rate: the limits of LoadReport.meets.
        warmup_s: a discarded run at the lowest rate before the first measured one (0: none).
    Returns:
        (highest rate that met the limits, or None; the reports of the measured runs).
    """
    dies = dies or make_dies(64)
    ordered = sorted(rates)
    reports: list[LoadReport] = []
    best, sent = None, 0
    if ordered and warmup_s > 0:
        warm = await run_load(url, api_key, ordered[0], warmup_s, stations, dies, timeout_s, sent)
        sent += warm.sent
    for rate in ordered:
        report = await run_load(url, api_key, rate, duration_s, stations, dies, timeout_s, sent)
        sent += report.sent
        reports.append(report)
        if not report.meets(p99_limit_ms, max_error_rate):
            break
        best = rate
    return best, reports


def load_test(url: str, api_key: str, rate: float, duration_s: float, **kwargs) -> LoadReport:
    """Synchronous run_load (same arguments)."""
    return asyncio.run(run_load(url, api_key, rate, duration_s, **kwargs))


def max_rate(url: str, api_key: str, rates: list[float], duration_s: float, **kwargs):
    """Synchronous find_max_rate (same arguments)."""
    return asyncio.run(find_max_rate(url, api_key, rates, duration_s, **kwargs))
