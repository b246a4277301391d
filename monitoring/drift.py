"""Drift of the last hour's inspections against the champion's training data, with Evidently.

Four families, each judged on its own and saved as an Evidently HTML report:
- process: the 48 parameters, Evidently's drifted-column count and per-parameter drift
  (normed Wasserstein distance; the metrics of its DataDriftPreset); drifted when the share
  of drifted parameters reaches the threshold, or (the seed's rule) when any parameter's
  mean moved more than 3 reference sigma;
- images: per-image intensity statistics (mean, std, 1st/50th/99th percentile per channel),
  the same metrics; the window's images come from the service's image store by `image_ref`;
- embeddings: the window's die embeddings from the similar-defect store against the training
  dies of the same model version, projected on principal components fitted on the
  reference, the same metrics on the components;
- notes: the word distributions, Evidently's Jensen-Shannon distance on the words; drifted
  when it reaches the threshold and what as many reference notes reach by chance, or when
  recurring words unseen in the reference make up a given share of the window's words
  (they are listed).
A family without enough data, or without its source, is skipped with the reason.
"""

from __future__ import annotations

import io
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import lancedb
import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import DriftedColumnsCount, ValueDrift
from PIL import Image
from scipy import sparse

from model.contract import read_split
from model.schema import parameter_names
from monitoring.config import MonitorConfig
from monitoring.history import Check
from service.image_store import open_image_store
from service.similar import table_name

FAMILIES = ("process", "images", "embeddings", "notes")
WORD = re.compile(r"[a-z0-9]+")
QUANTILES = {"p01": 0.01, "p50": 0.50, "p99": 0.99}
SHOWN_WORDS = 30


@dataclass
class FamilyDrift:
    """One family's verdict: its score against its threshold, the details, the HTML report."""

    name: str
    score: float | None
    threshold: float
    drifted: bool
    details: dict = field(default_factory=dict)
    report: str | None = None
    skipped: str = ""  # why the family was not judged


@dataclass
class DriftResult:
    """The drift check of one window, per family."""

    start: datetime
    end: datetime
    dies: int
    families: dict[str, FamilyDrift]

    @property
    def checked_at(self) -> datetime:
        return self.end

    @property
    def drifted(self) -> list[str]:
        """The families that drifted."""
        return [name for name, f in self.families.items() if f.drifted]

    def checks(self) -> list[Check]:
        """History entries, one per family: `drift_<family>`."""
        return [
            Check(f"drift_{f.name}", f.score, f.threshold, f.drifted, f.skipped)
            for f in self.families.values()
        ]

    def as_dict(self) -> dict:
        """JSON-ready (ISO times)."""
        return asdict(self) | {"start": self.start.isoformat(), "end": self.end.isoformat()}


REPORT_FOLDER = "%Y%m%dT%H%M%SZ"  # one folder of HTML reports per check, named by its time


def prune_reports(report_dir: str | Path, before: datetime) -> list[Path]:
    """Delete the check folders (`<report_dir>/<check time>/`) of checks before `before`.

    A few megabytes a family an hour add up; anything not named like a check folder is
    left alone. Returns the deleted folders.
    """
    removed = []
    for folder in sorted(Path(report_dir).glob("*T*Z")):
        try:
            when = datetime.strptime(folder.name, REPORT_FOLDER).replace(tzinfo=UTC)
        except ValueError:
            continue
        if folder.is_dir() and when < before:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def measure_drift(
    records: list[dict],
    reference_dir: str | Path,
    image_root: str | Path | None,
    report_dir: str | Path,
    now: datetime,
    config: MonitorConfig,
    similar_uri: str | None = None,
    model_version: str | None = None,
) -> DriftResult:
    """Judge every family on the inspections received in the drift window ending at `now`.

    Args:
        records: inspection records (process_log, operator_notes, image_ref, die_id,
            model_version, received_at); those outside the window are ignored.
        reference_dir: a split folder of the dataset contract (the champion's training data).
        image_root: the service's image store, a folder or s3://bucket/prefix (None: images
            are skipped).
        report_dir: where the Evidently HTML reports are written (`<family>.html`).
        now: the window's end (tz-aware).
        config: window, sample sizes and thresholds.
        similar_uri, model_version: the similar-defect store and the version whose
            embeddings to compare (default: the version that served most of the window).
    Returns:
        The verdicts per family.
    """
    start = now - timedelta(hours=config.drift_window_hours)
    windowed = [r for r in records if start <= r["received_at"] < now]
    rows = [windowed[i] for i in _pick(len(windowed), config.max_current_dies, config.seed)]
    ref = read_split(reference_dir, require_labels=False)
    pick = _pick(len(ref.ids), config.max_reference_dies, config.seed)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    version = model_version or _most_served(rows)
    args = (config, out, now)
    families = {
        "process": process_drift(_process_frame(rows), ref.process.iloc[pick], *args),
        "images": image_drift(rows, image_root, [ref.image_paths[i] for i in pick], *args),
        "embeddings": embedding_drift(rows, similar_uri, version, *args),
        "notes": notes_drift([r.get("operator_notes") or "" for r in rows], ref.notes, *args),
    }
    return DriftResult(start, now, len(rows), families)


def process_drift(
    current: pd.DataFrame, reference: pd.DataFrame, cfg: MonitorConfig, out: Path, now
) -> FamilyDrift:
    """The process family (see the module); `current` has the 48 parameter columns."""
    if len(current) < cfg.min_drift_dies:
        return _skip("process", cfg.process_drift_share, f"{len(current)} dies in the window")
    family = _column_family(
        "process", current, reference, cfg.process_column_threshold, cfg.process_drift_share,
        out, now,
    )  # fmt: skip
    sigma = reference.std().replace(0.0, np.nan)
    z = ((current.mean() - reference.mean()) / sigma).dropna()
    moved = {k: round(float(v), 2) for k, v in z.items() if abs(v) > cfg.mean_shift_sigma}
    family.details["mean_shift_sigma"] = moved
    family.drifted = family.drifted or bool(moved)
    return family


def image_drift(
    rows: list[dict], image_root, reference_paths: list[Path], cfg: MonitorConfig, out: Path, now
) -> FamilyDrift:
    """The images family: intensity statistics of the window's stored images."""
    if image_root is None:
        return _skip("images", cfg.image_drift_share, "no image store given")
    store = open_image_store(image_root)
    current, unreadable = [], 0
    for r in rows:
        try:
            image = io.BytesIO(store.get(r.get("image_ref") or ""))
            current.append(intensity_statistics(_pixels(image)))
        except (OSError, ValueError):
            unreadable += 1
    if len(current) < cfg.min_drift_dies:
        reason = f"{len(current)} readable images in the window ({unreadable} unreadable)"
        return _skip("images", cfg.image_drift_share, reason)
    reference = reference_image_statistics(tuple(reference_paths)).copy()
    family = _column_family(
        "images", pd.DataFrame(current), reference, cfg.image_column_threshold,
        cfg.image_drift_share, out, now,
    )  # fmt: skip
    family.details["unreadable_images"] = unreadable
    return family


def embedding_drift(
    rows: list[dict], uri: str | None, version: str | None, cfg: MonitorConfig, out: Path, now
) -> FamilyDrift:
    """The embeddings family: principal components of the window's die embeddings."""
    share = cfg.embedding_drift_share
    if uri is None or version is None:
        return _skip("embeddings", share, "no similar-defect store or model version given")
    try:
        table = lancedb.connect(str(uri)).open_table(table_name(version))
    except (ValueError, FileNotFoundError):
        return _skip("embeddings", share, f"no similar-defect index for version {version}")
    reference = _vectors(table, "source = 'training'")
    if len(reference) < max(cfg.min_drift_dies, cfg.embedding_components):
        reason = f"version {version}'s index holds {len(reference)} training dies"
        return _skip("embeddings", share, reason + " (build it with `dieguard index-similar`)")
    ids = sorted({str(r["die_id"]) for r in rows})
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids) or "''"
    current = _vectors(table, f"source = 'inspection' AND die_id IN ({quoted})")
    if len(current) < cfg.min_drift_dies:
        return _skip("embeddings", share, f"{len(current)} window dies have embeddings")
    reference = reference[_pick(len(reference), cfg.max_reference_dies, cfg.seed)]
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    axes = vt[: cfg.embedding_components]  # k, D
    names = [f"pc{i + 1}" for i in range(len(axes))]
    frames = [pd.DataFrame((v - mean) @ axes.T, columns=names) for v in (current, reference)]
    family = _column_family("embeddings", *frames, cfg.embedding_column_threshold, share, out, now)
    family.details |= {"model_version": str(version), "reference_dies": len(reference)}
    return family


def notes_drift(
    current: list[str], reference: list[str], cfg: MonitorConfig, out: Path, now
) -> FamilyDrift:
    """The notes family: the window's words against the reference notes' words.

    The distance of a few dozen notes from the reference is large by chance alone, and the
    more so the fewer notes, so the limit is the larger of the configured distance and what
    `written` notes drawn from the reference reach at the `notes_null_quantile`.
    """
    cur = [w for note in current for w in WORD.findall(note.lower())]
    ref_notes = [WORD.findall(note.lower()) for note in reference]
    ref = [w for words in ref_notes for w in words]
    written = sum(1 for note in current if note.strip())
    if written < cfg.min_notes or not ref:
        return _skip("notes", cfg.notes_js_threshold, f"{written} notes in the window")
    known = set(ref)
    new = Counter(w for w in cur if w not in known)
    recurring = {w: c for w, c in new.most_common() if c >= cfg.new_word_min_count}
    new_share = sum(recurring.values()) / len(cur)
    words = DataDefinition(categorical_columns=["word"])
    metric = ValueDrift(column="word", method="jensenshannon", threshold=cfg.notes_js_threshold)
    snapshot = Report([metric]).run(
        Dataset.from_pandas(pd.DataFrame({"word": cur}), data_definition=words),
        Dataset.from_pandas(pd.DataFrame({"word": ref}), data_definition=words),
        timestamp=now,
    )
    score = float(snapshot.dict()["metrics"][0]["value"])
    html = out / "notes.html"
    snapshot.save_html(str(html))
    null = chance_distances(ref_notes, written, cfg.notes_null_draws, cfg.seed)
    by_chance = float(np.quantile(null, cfg.notes_null_quantile))
    limit = max(cfg.notes_js_threshold, by_chance)
    details = {
        "notes": written,
        "words": len(cur),
        "js_threshold": cfg.notes_js_threshold,
        "js_by_chance": round(by_chance, 4),
        "new_word_share": round(new_share, 4),
        "new_word_share_threshold": cfg.new_word_share,
        "new_words": dict(list(recurring.items())[:SHOWN_WORDS]),
        "new_words_seen_once": sum(1 for c in new.values() if c < cfg.new_word_min_count),
    }
    drifted = score >= limit or new_share >= cfg.new_word_share
    return FamilyDrift("notes", score, limit, drifted, details, str(html))


def chance_distances(notes: list[list[str]], k: int, draws: int, seed: int = 0) -> np.ndarray:
    """Jensen-Shannon distances (natural log, as Evidently's) of the words of `k` notes drawn
    from `notes` to the words of all of them, for `draws` draws: the null distribution."""
    notes = [words for words in notes if words]  # `k` counts written notes
    vocab = {w: j for j, w in enumerate(sorted({w for words in notes for w in words}))}
    note_of = np.repeat(np.arange(len(notes)), [len(words) for words in notes])
    word_of = np.array([vocab[w] for words in notes for w in words])
    counts = sparse.csr_matrix((np.ones(len(word_of)), (note_of, word_of)))  # notes x words
    picks = np.random.default_rng(seed).integers(0, len(notes), size=draws * k)
    chosen = sparse.csr_matrix((np.ones(draws * k), (np.repeat(np.arange(draws), k), picks)),
                               shape=(draws, len(notes)))  # fmt: skip
    sample = (chosen @ counts).toarray()  # draws x words
    return js_distances(np.asarray(counts.sum(axis=0)).ravel(), sample)


def js_distances(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (natural log) of the distribution `p` (V,) to each row of
    `q` (D, V); both may be counts."""
    p = p / p.sum()
    q = q / q.sum(axis=1, keepdims=True)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=1)
    return np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0))


def intensity_statistics(pixels: np.ndarray) -> dict[str, float]:
    """Mean, std and the 1st, 50th and 99th percentile of each channel of a uint8 RGB image
    (percentiles nearest-rank, from the channel's histogram)."""
    levels = np.arange(256, dtype=np.float64)
    out = {}
    for c, channel in enumerate("rgb"):
        hist = np.bincount(pixels[..., c].ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        mean = float(p @ levels)
        out[f"{channel}_mean"] = mean
        out[f"{channel}_std"] = float(np.sqrt(p @ (levels - mean) ** 2))
        cdf = np.cumsum(p)
        for name, q in QUANTILES.items():
            out[f"{channel}_{name}"] = float(np.searchsorted(cdf, q - 1e-12))
    return out


def _column_family(name, current, reference, column_threshold, share, out, now) -> FamilyDrift:
    """Evidently's drifted-column count and per-column drift (normed Wasserstein) of two
    numeric tables: the metrics of its DataDriftPreset without the preset's second
    rendering of every column, which doubles the time."""
    columns = [
        c for c in reference.columns if current[c].notna().any() and reference[c].notna().any()
    ]
    if not columns:
        return _skip(name, share, "no column has values in both the window and the reference")
    drift = {"method": "wasserstein", "threshold": column_threshold}
    metrics = [DriftedColumnsCount(columns=columns, drift_share=share, **drift)]
    metrics += [ValueDrift(column=c, **drift) for c in columns]
    numeric = DataDefinition(numerical_columns=columns)
    snapshot = Report(metrics).run(
        Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=numeric),
        Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=numeric),
        timestamp=now,
    )
    metrics = snapshot.dict()["metrics"]
    scores = {m["config"]["column"]: float(m["value"]) for m in metrics if "column" in m["config"]}
    counted = next(m["value"] for m in metrics if "column" not in m["config"])
    html = out / f"{name}.html"
    snapshot.save_html(str(html))
    drifted = [c for c, s in scores.items() if s >= column_threshold]
    details = {
        "column_threshold": column_threshold,
        "drifted_columns": sorted(drifted, key=scores.get, reverse=True),
        "scores": {c: round(s, 4) for c, s in scores.items()},
        "dies": len(current),
        "reference_dies": len(reference),
        "unmeasured": [c for c in reference.columns if c not in columns],
    }
    score = float(counted["share"])
    return FamilyDrift(name, score, share, score >= share, details, str(html))


def _skip(name: str, threshold: float, reason: str) -> FamilyDrift:
    return FamilyDrift(name, None, threshold, False, {}, None, reason)


def _pick(n: int, most: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `most` of n items, drawn without replacement."""
    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def _process_frame(rows: list[dict]) -> pd.DataFrame:
    names = list(parameter_names())
    values = [[(r.get("process_log") or {}).get(k) for k in names] for r in rows]
    return pd.DataFrame(values, columns=names, dtype=np.float64)


def _most_served(rows: list[dict]) -> str | None:
    served = Counter(str(r["model_version"]) for r in rows if r.get("model_version"))
    return served.most_common(1)[0][0] if served else None


@lru_cache(maxsize=4)
def reference_image_statistics(paths: tuple[Path, ...]) -> pd.DataFrame:
    """Intensity statistics of the reference sample's images, one row each.

    Kept for the process's later checks: a training split is a snapshot that never changes
    (a new one has new paths), and reading a thousand images is most of an hourly check.
    """
    return pd.DataFrame([intensity_statistics(_pixels(p)) for p in paths])


def _pixels(source) -> np.ndarray:
    with Image.open(source) as image:
        return np.asarray(image.convert("RGB"))


def _vectors(table, where: str) -> np.ndarray:
    n = table.count_rows(where)
    if not n:
        return np.zeros((0, 0), np.float32)
    found = table.search().where(where).select(["vector"]).limit(n).to_arrow()
    return np.stack(found.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
