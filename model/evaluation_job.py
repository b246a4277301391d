"""One evaluation job: load the trained model(s), prepare the split, analyse, write the report."""

from __future__ import annotations

from pathlib import Path

from model.checkpoint import load_trained
from model.config import RunConfig
from model.data import ProcessScaler, load_split
from model.error_analysis import error_analysis
from model.evaluate import evaluate_model
from model.evaluation_report import jsonable, write_report
from model.fairness import fairness_audit
from model.predict import pick_device
from model.prepare import (
    SCALER_FILE,
    TOKENIZER_FILE,
    Prepared,
    encode_split,
    prepare,
    trained_with,
)
from model.tokenizer import load_tokenizer


def run_evaluation(
    model_path: str | Path,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    baseline_path: str | Path | None = None,
    split: str = "test",
    cache_dir: str | Path | None = None,
    num_examples: int = 20,
    device: str = "auto",
) -> dict:
    """Evaluate a trained model on one split and write `evaluation.html` and `.json`.

    Args:
        model_path: a model.pt written by training (runs/<name>/<kind>/model.pt).
        out_dir: where the report goes (created).
        data_dir: the data set root; default: the one the model was trained on.
        baseline_path: a vision-only baseline's model.pt to compare with, on the same dies.
        split: which split to score.
        cache_dir: image decode cache; default: the model's configured one.
        num_examples: misclassified dies shown in the error analysis.
        device: "auto", "cpu" or "cuda".
    Returns:
        The headline figures with the report's paths (JSON-ready).
    """
    target = str(pick_device(device))
    model, cfg, point = load_trained(model_path, target)
    if data_dir is not None:
        cfg.data_dir = str(data_dir)
    if cache_dir is not None:
        cfg.data.cache_dir = str(cache_dir)
    baseline = baseline_point = None
    if baseline_path is not None:
        baseline, base_cfg, baseline_point = load_trained(baseline_path, target)
        if base_cfg.model.img_size != cfg.model.img_size:
            raise ValueError(
                f"the baseline was trained on {base_cfg.model.img_size} px images, "
                f"the model on {cfg.model.img_size} px: they cannot share the test images"
            )
    data, statistics = prepare_for(model_path, cfg, split, Path(out_dir) / "prepared")
    evaluation = evaluate_model(model, point, data, split, baseline, baseline_point)
    errors = error_analysis(evaluation, data, split, num_examples)
    fairness = fairness_audit(evaluation, data.splits[split].metadata)
    title = f"dieguard evaluation: {Path(model_path).parent.name} model of run {cfg.name}, {split}"
    html_path, json_path = write_report(evaluation, errors, fairness, out_dir, title)
    return summary(evaluation.metrics, fairness, html_path, json_path, statistics)


def prepare_for(model_path, cfg: RunConfig, split: str, folder: Path) -> tuple[Prepared, str]:
    """The split with the z-score statistics and tokenizer the model was trained with.

    They are read from the run's `prepared/` folder (beside the model's folder) when it
    holds both; otherwise they are fitted again on the data set's training split.
    Returns:
        The Prepared (holding `split` only) and where its statistics came from.
    """
    saved = trained_with(model_path)
    if (saved / SCALER_FILE).exists() and (saved / TOKENIZER_FILE).exists():
        tokenizer = load_tokenizer(saved / TOKENIZER_FILE)
        if tokenizer.get_vocab_size() <= cfg.model.vocab_size:
            scaler = ProcessScaler.load(saved / SCALER_FILE)
            part = load_split(cfg.data_dir, split, cfg.model.img_size, cfg.data.cache_dir, scaler)
            dataset = encode_split(part, tokenizer, cfg.model.max_note_len)
            return Prepared({split: part}, {split: dataset}, scaler, tokenizer, saved), str(saved)
    data = prepare(cfg, folder, splits=(split,))
    return data, f"refitted on {Path(cfg.data_dir) / 'train'}"


def summary(metrics: dict, fairness: dict, html_path: Path, json_path: Path, statistics: str):
    """The figures a command line prints, with the report's paths."""
    notes = metrics["notes"]["all_dies"]
    base = metrics["baseline"]
    return jsonable(
        {
            "html": str(html_path),
            "json": str(json_path),
            "split": metrics["split"],
            "n": metrics["n"],
            "n_defective": metrics["n_defective"],
            "threshold": metrics["threshold"],
            "accuracy": metrics["model"]["accuracy"],
            "macro_f1": metrics["model"]["macro_f1"],
            "escape": metrics["model"]["escape"],
            "fpr": metrics["model"]["fpr"],
            "notes_removed": {k: notes["notes_removed"][k] for k in ("escape", "fpr", "macro_f1")},
            "baseline": None
            if base is None
            else {k: base[k] for k in ("accuracy", "macro_f1", "escape", "fpr")},
            "at_seed_escape": None
            if metrics["seed_point"] is None
            else {
                name: {k: metrics["seed_point"][name][k] for k in ("escape", "fpr", "false_flags")}
                for name in ("model", "baseline")
            },
            "warnings": metrics["warnings"],
            "recommendations": fairness["recommendations"],
            "statistics": statistics,
        }
    )
