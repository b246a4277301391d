"""The GPU check: training throughput and GPU inference of the gpu config, in one timed run.

    python -m model.gpu_check --out runs/gpu_check             # on the GPU machine
    python -m model.gpu_check --dry-run --out /tmp/gpu_check   # the same code, tiny, on CPU

It needs only torch, timm, onnx, onnxruntime, numpy and pandas. Every section is timed and
runs under a global time budget; a section that fails is recorded with its error and the
run goes on; one that would not fit in the time left is skipped with the reason. The
torch.compile and TensorRT sections run in a child process that is stopped at the budget.
Results go to DIR/gpu_check.json and DIR/gpu_check.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from model.config import RunConfig, load_config
from model.gpu_env import environment

RESULT_FILE, TABLE_FILE, SECTIONS_DIR = "gpu_check.json", "gpu_check.md", "sections"
DRY_MODEL = [  # the smoke config's model: seconds on a CPU
    *("model.img_size=32", "model.patch_size=8", "model.embed_dim=32", "model.vit_dim=32"),
    *("model.vit_depth=1", "model.vit_heads=2", "model.vocab_size=200", "model.max_note_len=16"),
    *("model.text_layers=1", "model.text_heads=2", "model.fusion_heads=2"),
    *("train.batch_size=8", "train.device=cpu", "data.num_workers=0"),
]


@dataclass(frozen=True)
class Sizes:
    """How much each section measures."""

    step_dies: int = 2560  # dies the step timings cycle over
    warmup: int = 5  # untimed steps first (cuDNN autotuning, allocator growth)
    steps: int = 20  # timed steps per figure, at least
    measure_s: float = 3.0  # and at least this long (NVML averages utilization over ~1 s)
    max_batch: int = 4096  # the largest batch tried
    train_dies: int = 4000  # the short real training
    val_dies: int = 1000
    stage1_epochs: int = 1
    stage2_epochs: int = 3
    eval_dies: int = 512  # decision agreement between precisions and providers
    batches: tuple[int, ...] = (1, 8, 32)
    latency_runs: int = 50  # timed runs per latency figure (fewer when time_cap_s is reached)
    time_cap_s: float = 2.0
    calibration_dies: int = 128
    budget_s: float = 360.0
    child_cap_s: float = 150.0  # the longest a child section (compile, TensorRT) may run
    export_opset: int = 18  # 17: the TorchScript exporter, seconds instead of a minute


DRY = Sizes(
    step_dies=32, warmup=1, steps=2, measure_s=0.0, max_batch=32, train_dies=64, val_dies=32,
    stage2_epochs=1, eval_dies=16, batches=(1, 8), latency_runs=3, time_cap_s=0.5,
    calibration_dies=16, budget_s=600.0, child_cap_s=300.0, export_opset=17,
)  # fmt: skip


@dataclass
class Check:
    """One run of the check: its configuration, sizes, device, folders and time budget."""

    cfg: RunConfig
    sizes: Sizes
    device: torch.device
    out: Path
    dry_run: bool
    deadline: float  # time.perf_counter() at which the budget ends
    argv: list[str] = field(default_factory=list)  # for the child sections
    shared: dict = field(default_factory=dict)  # what one section hands to the next

    @property
    def work(self) -> Path:
        """ONNX files, engine caches and reference outputs."""
        return self.out / "work"

    def left(self) -> float:
        return self.deadline - time.perf_counter()


@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Check], dict]
    min_s: float  # skipped when less time than this is left
    isolated: bool = False  # run in a child process, stopped at the budget


def sections() -> list[Section]:
    """In order of importance: what a short budget leaves out comes last."""
    from model import gpu_infer, gpu_train

    return [
        Section("train_step", gpu_train.train_step, 20),
        Section("train_levers", gpu_train.train_levers, 30),
        Section("train_max_batch", gpu_train.train_max_batch, 30),
        Section("train_short", gpu_train.train_short, 40),
        Section("export", gpu_infer.export_variants, 40),
        Section("infer_torch", gpu_infer.infer_torch, 15),
        Section("infer_onnxruntime", gpu_infer.infer_onnxruntime, 20),
        Section("train_compile", gpu_train.train_compile, 60, isolated=True),
        Section("infer_tensorrt", gpu_infer.infer_tensorrt, 60, isolated=True),
    ]


def run_section(check: Check, section: Section) -> dict:
    """Run one section; never raises. Returns its figures with status and seconds."""
    left = check.left()
    if left < section.min_s:
        reason = f"time budget: {left:.0f} s left, needs ~{section.min_s:.0f} s"
        return {"status": "skipped", "reason": reason}
    started = time.perf_counter()
    try:
        result = {"status": "ok"} | (
            _child(check, section) if section.isolated else section.run(check)
        )
    except Exception as err:  # recorded; the next section runs
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        result["traceback"] = traceback.format_exc()[-3000:]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result | {"seconds": round(time.perf_counter() - started, 2)}


def _child(check: Check, section: Section) -> dict:
    """Run a section in a child process, killed when the budget (or its cap) runs out."""
    limit = max(5.0, min(check.left() - 5.0, check.sizes.child_cap_s))
    path = check.out / SECTIONS_DIR / f"{section.name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "model.gpu_check", *check.argv]
    cmd += ["--only", section.name, "--budget-s", f"{limit:.0f}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as err:
        raise TimeoutError(f"{section.name} ran past its {limit:.0f} s and was stopped") from err
    if not path.is_file():
        raise RuntimeError(f"child exited {done.returncode}: {done.stderr[-1500:]}")
    result = json.loads(path.read_text())
    return result | {"child_exit": done.returncode}


def new_check(args: argparse.Namespace, argv: list[str]) -> Check:
    overrides = (DRY_MODEL if args.dry_run else []) + list(args.overrides)
    cfg = load_config(args.config, overrides)
    sizes = DRY if args.dry_run else Sizes()
    if args.dry_run:
        torch.set_num_threads(1)  # the tiny model: more threads only contend
    if args.budget_s:
        sizes = replace(sizes, budget_s=args.budget_s)
    on_gpu = cfg.train.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    out = Path(args.out)
    (out / SECTIONS_DIR).mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + sizes.budget_s
    return Check(cfg, sizes, device, out, args.dry_run, deadline, argv)


def run_check(check: Check, only: str | None = None) -> dict:
    """Every section in order (or `only` one, as a child), written as JSON and markdown."""
    started = time.perf_counter()
    chosen = [s for s in sections() if only in (None, s.name)]
    if only:
        result = run_section(check, replace(chosen[0], isolated=False, min_s=0))
        (check.out / SECTIONS_DIR / f"{only}.json").write_text(json.dumps(result, default=str))
        return result
    report = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dry_run": check.dry_run,
        "config": check.cfg.to_dict(),
        "sizes": asdict(check.sizes),
        "device": str(check.device),
        "environment": environment(),
        "sections": {},
    }
    no_gpu = check.device.type == "cpu" and not check.dry_run
    for section in chosen:
        if no_gpu:  # the full sizes on a CPU would run for hours, past any budget
            reason = "no CUDA device (torch.cuda.is_available() is False); --dry-run runs on a CPU"
            report["sections"][section.name] = {"status": "skipped", "reason": reason}
            continue
        report["sections"][section.name] = run_section(check, section)
        _write(check.out, report, started)  # what ran so far survives a kill
    from model.gpu_report import projection

    report["projection"] = projection(check.cfg, report["sections"])
    _write(check.out, report, started)
    return report


def _write(out: Path, report: dict, started: float) -> None:
    from model.gpu_report import markdown

    report["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / RESULT_FILE).write_text(json.dumps(report, indent=2, default=str))
    (out / TABLE_FILE).write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and .md")
    parser.add_argument("--config", default="configs/gpu.yaml")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--budget-s", type=float, default=0.0, help="time budget (0: default)")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one section, as a child process
    parser.add_argument("overrides", nargs="*", help="config key=value, e.g. train.batch_size=256")
    args = parser.parse_args(argv)
    check = new_check(args, _child_argv(args))
    report = run_check(check, args.only)
    if args.only:
        return 0
    failed = [k for k, v in report["sections"].items() if v["status"] == "failed"]
    print((check.out / TABLE_FILE).read_text())
    print(f"wrote {check.out / RESULT_FILE}; failed sections: {', '.join(failed) or 'none'}")
    return 0


def _child_argv(args: argparse.Namespace) -> list[str]:
    """What a child section is started with (it gets its own --only and --budget-s)."""
    return [
        "--out",
        args.out,
        "--config",
        args.config,
        *(["--dry-run"] * args.dry_run),
        *args.overrides,
    ]


if __name__ == "__main__":
    sys.exit(main())
