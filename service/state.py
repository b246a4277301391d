"""Everything one running service holds: settings, models, the log, images, the index."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.auth import FailedAttempts
from service.config import ServiceConfig
from service.image_store import Images, open_image_store
from service.inspection_log import InspectionLog
from service.metrics import ServiceMetrics
from service.models import ModelPool, RegistryWatcher
from service.shadow import ShadowScoring
from service.similar import SimilarDefects
from service.spool import Spool


@dataclass
class ServiceState:
    config: ServiceConfig
    metrics: ServiceMetrics
    pool: ModelPool
    log: InspectionLog
    images: Images
    similar: SimilarDefects
    attempts: FailedAttempts
    shadows: ShadowScoring
    watcher: RegistryWatcher | None = None
    pending_embeddings: list = field(default_factory=list)

    @classmethod
    def build(cls, config: ServiceConfig) -> ServiceState:
        metrics = ServiceMetrics()
        pool = ModelPool(config, metrics)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        inspection_log = InspectionLog(config.log_url, spool=Spool(config.state_dir / "spool"))
        return cls(
            config=config,
            metrics=metrics,
            pool=pool,
            log=inspection_log,
            images=open_image_store(config.image_location),
            similar=SimilarDefects(config.similar_location),
            attempts=FailedAttempts(config.auth_failures_per_minute),
            shadows=ShadowScoring(inspection_log, metrics),
            watcher=None if config.bundle else RegistryWatcher(pool, config),
        )
