"""The models the service runs: the champion, an optional candidate, and how dies are routed.

The champion comes from the registry's `champion` alias (or a fixed bundle folder). In
shadow mode the candidate (the `challenger` alias) runs on every die and the champion
decides; in canary mode the candidate decides the share of dies whose stable die-id hash
falls under `canary_share`. Both decisions are logged either way. A watcher re-reads the
aliases and swaps models in place when one moves: no restart, no request lost.

The registry's rollout state (registry.rollout_state, written by the rollout flow) steers
routing: whenever it changes, the next sync sets the mode and share it names, and while it
is present the candidate is the version it names. When it disappears (promotion, rollback,
stop), routing goes back to off: the champion alone. An admin change (PUT
/api/v1/admin/routing) holds until the rollout state next changes, for good when there is
none; to stop a rollout for good, clear its state (registry.rollout_state.clear_rollout).

Each champion loaded from the registry is remembered on disk (`last_good.json` beside the
downloaded bundles). A pod that starts while the registry is unreachable serves that bundle,
once its files match their digests again, and says so (`fallback`); the next successful
sync follows the registry again.

A candidate runs only when the registry's serving rule allows it (registry.servable), and a
rollout whose lease lapsed (its flow died) counts as none: the champion alone decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from registry import CHAMPION, download_bundle, open_store
from registry.aliases import alias_version
from registry.bundle import verify
from registry.rollout_state import lease_lapsed, record_stall, rollout_state
from registry.servable import NotServable, require_servable
from service.batcher import MicroBatcher
from service.config import ServiceConfig
from service.engine import ModelEngine
from service.metrics import ServiceMetrics

CANDIDATE = "candidate"
LAST_GOOD_FILE = "last_good.json"
log = logging.getLogger("dieguard.service")


def canary_bucket(die_id: str) -> float:
    """A die's stable position in [0, 1): the same die always takes the same route."""
    digest = hashlib.sha256(die_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Routing:
    """Who decides: `off` (champion only), `shadow` (both run, champion decides) or `canary`."""

    mode: str = "off"
    share: float = 0.0

    def deciding_role(self, die_id: str) -> str:
        if self.mode == "canary" and canary_bucket(die_id) < self.share:
            return CANDIDATE
        return CHAMPION


@dataclass
class LoadedModel:
    """An engine and its batcher."""

    role: str
    engine: ModelEngine
    batcher: MicroBatcher
    loaded_at: datetime

    @property
    def version(self) -> str:
        return self.engine.version


class ModelPool:
    """The loaded models by role, replaced atomically (a request keeps the one it started on)."""

    def __init__(self, config: ServiceConfig, metrics: ServiceMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.routing = Routing(config.route_mode, config.canary_share)
        self.last_error: str | None = None

    def get(self, role: str) -> LoadedModel | None:
        return self.models.get(role)

    async def load(self, role: str, folder: Path) -> LoadedModel:
        """Open a bundle (in a thread), start its batcher, then swap it in and stop the old."""
        engine = await asyncio.to_thread(ModelEngine, folder, self.config.threads)

        def on_batch(size: int, seconds: float) -> None:
            self.metrics.batch_size.labels(role).observe(size)
            self.metrics.model_latency.labels(role).observe(seconds)

        batcher = MicroBatcher(
            lambda dies: engine.predict(dies, role),
            self.config.max_batch,
            self.config.max_wait_ms,
            on_batch,
            name=role,
            max_queue=self.config.max_queue,
            timeout_s=self.config.request_timeout_s,
        )
        batcher.start()
        new = LoadedModel(role, engine, batcher, datetime.now(UTC))
        old = self.models.get(role)
        self.models[role] = new
        self.metrics.model_changed(role, old.version if old else None, new.version)
        log.info("%s is now %s", role, engine.label)
        if old is not None:
            await old.batcher.stop()
        return new

    async def unload(self, role: str) -> None:
        old = self.models.pop(role, None)
        if old is not None:
            self.metrics.model_changed(role, old.version, None)
            await old.batcher.stop()

    async def close(self) -> None:
        for role in list(self.models):
            await self.unload(role)

    def wants_candidate(self) -> bool:
        return self.routing.mode != "off"


class RegistryWatcher:
    """Follows the registry's aliases and loads whatever they point at."""

    def __init__(self, pool: ModelPool, config: ServiceConfig) -> None:
        self.pool = pool
        self.config = config
        self.bundles = config.state_dir / "bundles" / config.model_name
        self._store = None
        self._task: asyncio.Task | None = None
        self._syncing = asyncio.Lock()  # one sync at a time: the loop's and an admin's
        self._rollout: dict | None = None  # the registry's rollout state at the last sync
        self.fallback: str | None = None  # why a last-good bundle is served, when it is

    async def sync(self) -> None:
        """Follow the rollout state, then load the champion (and the candidate when routing
        wants one: the rollout's version, else the candidate alias's) if they moved."""
        await self._follow_rollout()
        wanted = {CHAMPION: await self._alias(CHAMPION)}
        if self.pool.wants_candidate():
            wanted[CANDIDATE] = await self.candidate_version()
        if wanted.get(CANDIDATE) == wanted[CHAMPION]:
            wanted[CANDIDATE] = None  # the candidate was promoted: nothing to compare
        if wanted.get(CANDIDATE) is not None:
            try:
                await self.check_servable(wanted[CANDIDATE])
            except NotServable:
                self.pool.routing = Routing()  # the champion alone
                raise
        for role in (CHAMPION, CANDIDATE):
            version, current = wanted.get(role), self.pool.get(role)
            if version is None:
                if role == CANDIDATE and current is not None:
                    await self.pool.unload(role)
                continue
            if current is None or current.version != version:
                folder = await asyncio.to_thread(self._download, version)
                await self.pool.load(role, folder)

    async def candidate_version(self) -> str | None:
        """The rollout's version, else the candidate alias's."""
        rollout = self._rollout
        return rollout["version"] if rollout else await self._alias(self.config.candidate_alias)

    async def check_servable(self, version: str) -> None:
        """Raises NotServable when the registry's serving rule refuses the version."""
        await asyncio.to_thread(require_servable, self._client(), self.config.model_name, version)

    async def check_candidate(self) -> None:
        """check_servable for the candidate routing would load (none: nothing to check)."""
        version = await self.candidate_version()
        if version is not None:
            await self.check_servable(version)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            await self.sync_reporting()

    async def sync_reporting(self) -> None:
        """sync(), keeping the current models and recording the error when it fails.

        Syncs take turns: one that read the routing before an admin changed it would
        otherwise unload the candidate the admin's sync had just loaded."""
        async with self._syncing:
            try:
                await self.sync()
                self.pool.last_error, self.fallback = None, None
                await asyncio.to_thread(self._remember_champion)
            except Exception as err:  # registry down, bundle altered: keep serving what we have
                self.pool.last_error = f"model reload failed: {type(err).__name__}: {err}"
                log.warning(self.pool.last_error)

    async def load_last_good(self) -> bool:
        """Serve the last champion this pod loaded from the registry, verified again, when
        no champion is loaded (the registry is unreachable); True when it is served."""
        pointer = self.bundles / LAST_GOOD_FILE
        if self.pool.get(CHAMPION) is not None or not pointer.is_file():
            return False
        try:
            folder = self.bundles / json.loads(pointer.read_text())["folder"]
            await asyncio.to_thread(verify, folder)
            loaded = await self.pool.load(CHAMPION, folder)
        except Exception as err:  # altered or incomplete: no model beats a wrong one
            log.error("the last-good bundle cannot be served: %s", err)
            return False
        self.fallback = f"last-good bundle v{loaded.version}: the registry is unreachable"
        log.warning("serving the %s", self.fallback)
        return True

    def _remember_champion(self) -> None:
        champion = self.pool.get(CHAMPION)
        pointer = self.bundles / LAST_GOOD_FILE
        if champion is None or not champion.engine.folder.is_relative_to(self.bundles):
            return
        text = json.dumps({"version": champion.version, "folder": champion.engine.folder.name})
        if not pointer.is_file() or pointer.read_text() != text:
            temp = pointer.with_suffix(".part")
            temp.write_text(text)
            temp.replace(pointer)

    async def _follow_rollout(self) -> None:
        """Routing from the registry's rollout state when it changed (off when it went away)."""
        state = await asyncio.to_thread(rollout_state, self._client(), self.config.model_name)
        if lease_lapsed(state):  # its flow died: no one judges the challenger any more
            await asyncio.to_thread(record_stall, self._client(), self.config.model_name, state)
            state = None
        if state != self._rollout:
            routing = Routing(state["mode"], state["share"]) if state else Routing()
            log.info("rollout state: routing %s %.0f%%", routing.mode, 100 * routing.share)
            self.pool.routing = routing
        self._rollout = state

    async def _alias(self, alias: str) -> str | None:
        return await asyncio.to_thread(alias_version, self._client(), self.config.model_name, alias)

    def _client(self):
        if self._store is None:
            self._store = open_store(self.config.tracking_uri)
        return self._store.client

    def _download(self, version: str) -> Path:
        dest = self.bundles / f"v{version}"
        return download_bundle(self._client(), self.config.model_name, version, dest)
