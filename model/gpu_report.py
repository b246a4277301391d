"""The GPU check's results as markdown tables, and the full retrain's projected time."""

from __future__ import annotations

RETRAIN_TRAIN_DIES, RETRAIN_VAL_DIES = 50_000, 10_000


def projection(cfg, sections: dict) -> dict:
    """Minutes of the gpu config's full retrain (stage 1 + stage 2 epochs over 50,000 dies,
    validating 10,000 dies each epoch), at the baseline step and at the best measured one."""
    step = sections.get("train_step", {})
    short = sections.get("train_short", {})
    try:
        rate1, rate2 = step["stage_1"]["dies_per_s"], step["stage_2"]["dies_per_s"]
        eval_rate = short["eval_dies_per_s"]
    except (KeyError, TypeError):
        return {"status": "skipped", "reason": "needs train_step and train_short figures"}
    t = cfg.train
    best = max([rate2, *_rates(sections)])
    val_s = (t.stage1_epochs + t.stage2_epochs) * RETRAIN_VAL_DIES / eval_rate

    def minutes(r1: float, r2: float) -> float:
        train_s = RETRAIN_TRAIN_DIES * (t.stage1_epochs / r1 + t.stage2_epochs / r2)
        return round((train_s + val_s) / 60, 1)

    return {
        "status": "ok",
        "train_dies": RETRAIN_TRAIN_DIES,
        "val_dies": RETRAIN_VAL_DIES,
        "epochs": t.stage1_epochs + t.stage2_epochs,
        "minutes_as_train_py_runs": minutes(rate1, rate2),
        "best_stage2_dies_per_s": best,
        "minutes_at_best": minutes(rate1 * best / rate2, best),
    }


def _rates(sections: dict) -> list[float]:
    names = ("train_levers", "train_compile", "train_max_batch")
    return [r["dies_per_s"] for r in _rows(sections, names) if "dies_per_s" in r]


def _rows(sections: dict, names: tuple[str, ...]) -> list[dict]:
    return [r for name in names for r in sections.get(name, {}).get("rows", [])]


def markdown(report: dict) -> str:
    env, sections = report["environment"], report["sections"]
    libs = env["libraries"]
    lines = [
        f"# GPU check{' (dry run)' if report['dry_run'] else ''}: {env.get('device')}",
        "",
        f"Started {report['started_at']}, {report.get('total_seconds')} s in all. "
        f"Driver {env.get('driver')}, torch {libs.get('torch')} (CUDA {env.get('torch_cuda')}), "
        f"onnxruntime {libs.get('onnxruntime')}, timm {libs.get('timm')}.",
        "",
        "| section | status | seconds | note |",
        "|---|---|---|---|",
    ]
    for name, s in sections.items():
        note = s.get("reason") or s.get("error") or ""
        lines.append(f"| {name} | {s['status']} | {s.get('seconds')} | {_cell(note)} |")
    lines += _training(sections) + _short(sections) + _inference(sections)
    proj = report.get("projection", {})
    if proj.get("status") == "ok":
        lines += [
            "",
            f"Full retrain ({proj['epochs']} epochs over {proj['train_dies']:,} dies, "
            f"{proj['val_dies']:,} validated each epoch): {proj['minutes_as_train_py_runs']} min "
            f"as train.py runs, {proj['minutes_at_best']} min at the fastest step measured "
            "(any lever or batch size).",
        ]
    return "\n".join(lines) + "\n"


def _training(sections: dict) -> list[str]:
    head = [
        "",
        "## Training step (stage 2 unless named)",
        "",
        "| setting | dies/s | step ms | data wait | GPU util % | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    rows = []
    step = sections.get("train_step", {})
    for stage in ("stage_1", "stage_2"):
        if stage in step:
            label = f"train.py, {stage.replace('_', ' ')}, batch {step['batch_size']}"
            rows.append((label, step[stage]))
    rows += [(r["lever"], r) for r in _rows(sections, ("train_levers", "train_compile"))]
    rows += [(f"batch {r['batch_size']}", r) for r in _rows(sections, ("train_max_batch",))]
    keys = ("step_ms", "data_wait_share", "gpu_utilization_pct", "peak_memory_gib")
    body = [
        f"| {label} | {r.get('dies_per_s', r.get('error', ''))} | "
        + " | ".join(str(r.get(k, "")) for k in keys)
        + " |"
        for label, r in rows
    ]
    return head + body if body else []


def _short(sections: dict) -> list[str]:
    short = sections.get("train_short", {})
    if "epochs" not in short:
        return []
    lines = [
        "",
        f"## Short training ({short['train_dies']} dies, val {short['val_dies']})",
        "",
        "| epoch | stage | train loss | val escape | val FPR | val macro F1 | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in short["epochs"]:
        keys = ("epoch", "stage", "train_loss", "val_escape", "val_fpr", "val_macro_f1", "seconds")
        lines.append("| " + " | ".join(str(e.get(k)) for k in keys) + " |")
    return lines


def _inference(sections: dict) -> list[str]:
    rows = _rows(sections, ("infer_torch", "infer_onnxruntime", "infer_tensorrt"))
    if not rows:
        return []
    lines = [
        "",
        "## Inference (p50 / p99 ms, dies/s)",
        "",
        "| variant | provider | agreement | batch | p50 ms | p99 ms | dies/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        batches = [k for k in r if k.startswith("batch_")]
        if not batches:
            why = _cell(r.get("reason") or r.get("error") or "")
            lines.append(f"| {r['variant']} | {r['provider']} | {r.get('status')}: {why} | | | | |")
        for k in batches:
            b = r[k]
            figures = f"{b['p50_ms']} | {b['p99_ms']} | {b['dies_per_s']}"
            lines.append(
                f"| {r['variant']} | {r['provider']} | {r['agreement']} | {k[6:]} | {figures} |"
            )
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")[:160]
