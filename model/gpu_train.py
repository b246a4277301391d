"""Training sections of the GPU check: the real training step's throughput, lever by lever.

Every figure runs model.train's own step (stage 1 or 2: inputs to the device, augmentation,
note dropout, bf16 autocast, loss, backward, clipping, AdamW, schedule, weight average) on
rendered dies (model.gpu_dies); the short training runs model.train.train_model itself.
Levers, each measured alone against the baseline (train.py as it runs today: DataLoader
workers, pinned memory on CUDA, plain AdamW, no compile): no pinned memory, channels-last
weights, fused AdamW, dies held on the device, torch.compile, and the batch size.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Iterator

import numpy as np
import torch

from model import train as training
from model.batches import die_loader
from model.checkpoint import unwrap
from model.gpu_dies import check_data
from model.gpu_env import UtilizationSampler
from model.losses import class_alpha
from model.network import build_model
from model.predict import predict

LEVERS = {  # name: (pinned, channels_last, fused, on_device)
    "baseline (train.py)": (True, False, False, False),
    "no pinned memory": (False, False, False, False),
    "channels-last": (True, True, False, False),
    "fused AdamW": (True, False, True, False),
    "dies on the device": (True, False, False, True),
    "all but compile": (True, True, True, True),
}


def train_step(check) -> dict:
    """The gpu config's step as train.py runs it, stage 1 and stage 2."""
    baseline = LEVERS["baseline (train.py)"]
    rows = {f"stage_{s}": _measure(check, _trainer(check, *baseline), s) for s in (1, 2)}
    return {"batch_size": check.cfg.train.batch_size, "img_size": check.cfg.model.img_size} | rows


def train_levers(check) -> dict:
    """Stage-2 dies/s with each lever alone, then all together (torch.compile apart)."""
    rows = [
        {"lever": name} | _measure(check, _trainer(check, *on), 2) for name, on in LEVERS.items()
    ]
    return {"rows": rows}


def train_compile(check) -> dict:
    """torch.compile on top of every other lever, against the same without it (stage 2)."""
    backend = "eager" if check.device.type == "cpu" else "inductor"  # CPU: tracing only
    plain = _measure(check, _trainer(check, *LEVERS["all but compile"]), 2)
    started = time.perf_counter()
    compiled = _trainer(check, *LEVERS["all but compile"], compile_backend=backend)
    row = _measure(check, compiled, 2)
    row["with_warmup_seconds"] = round(time.perf_counter() - started, 1)
    rows = [{"lever": "all but compile (again, beside compile)"} | plain]
    rows.append({"lever": "all + torch.compile"} | row)
    return {"backend": backend, "rows": rows}


def train_max_batch(check) -> dict:
    """Double the batch (every lever but compile) until memory runs out or the cap."""
    rows, batch, largest = [], check.cfg.train.batch_size, None
    while batch <= check.sizes.max_batch and check.left() > 20:
        try:
            trainer = _trainer(check, *LEVERS["all but compile"], batch=batch)
            rows.append({"batch_size": batch} | _measure(check, trainer, 2, steps=5))
            largest = batch
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError, or cuBLAS failing to allocate
            if not _out_of_memory(err):
                raise
            rows.append({"batch_size": batch, "error": f"out of memory: {str(err)[:200]}"})
            break
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        batch *= 2
    best = max((r for r in rows if "dies_per_s" in r), key=lambda r: r["dies_per_s"], default=None)
    return {"largest_fitting": largest, "fastest": best and best["batch_size"], "rows": rows}


def train_short(check) -> dict:
    """A short real training (train_model) on rendered dies: the loss falls, val figures."""
    s, cfg = check.sizes, copy.deepcopy(check.cfg)
    cfg.train.stage1_epochs, cfg.train.stage2_epochs = s.stage1_epochs, s.stage2_epochs
    cfg.train.patience = cfg.train.lr_patience = s.stage1_epochs + s.stage2_epochs
    data = _dies(check, {"train": s.train_dies, "val": s.val_dies})
    folder = check.work / "train_short"
    result = training.train_model("multimodal", data, cfg, folder, resume=False, progress=False)
    check.shared["model"] = result.model.to(check.device)
    check.shared["threshold"] = result.operating_point.threshold
    started = time.perf_counter()
    predict(result.model, data.datasets["val"], batch_size=2 * cfg.train.batch_size)
    eval_s = time.perf_counter() - started
    losses = [r["train_loss"] for r in result.history if r["stage"] == 2]
    keep = ("epoch", "stage", "train_loss", "val_loss", "val_escape", "val_fpr", "val_macro_f1")
    keep += ("seconds", "data_wait_s")
    return {
        "train_dies": s.train_dies,
        "val_dies": s.val_dies,
        "epochs": [{k: _round(r.get(k)) for k in keep} for r in result.history],
        "stage2_loss_fell": bool(len(losses) > 1 and losses[-1] < losses[0]),
        "operating_point": vars(result.operating_point),
        "seconds": round(result.seconds, 1),
        "eval_dies_per_s": round(s.val_dies / eval_s, 1),
    }


def _out_of_memory(err: RuntimeError) -> bool:
    text = str(err).lower()
    return (
        isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "alloc" in text
    )


def _dies(check, sizes: dict[str, int]):
    m = check.cfg.model
    return check_data(sizes, m.img_size, m.max_note_len, m.vocab_size, check.device)


def _step_dies(check):
    if "step_dies" not in check.shared:
        check.shared["step_dies"] = _dies(check, {"train": check.sizes.step_dies})
    return check.shared["step_dies"]


class _Trainer:
    """model.train's epoch runner bound to one model, optimizer and die source."""

    def __init__(self, runner, model, batches: Iterator, batch: int) -> None:
        self.runner, self.model, self.batches, self.batch = runner, model, batches, batch


def _trainer(check, pinned, channels_last, fused, on_device, batch=None, compile_backend=None):
    """A fresh multimodal model with train_model's optimizer, schedule, loss and average."""
    cfg, device, data = check.cfg, check.device, _step_dies(check)
    t, batch = cfg.train, batch or cfg.train.batch_size
    torch.manual_seed(t.seed)
    model = build_model(cfg.model, "multimodal").to(device)
    split = data.splits["train"]
    _fit_reference(check, model, split)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    stages, steps = [1, 2], max(1, len(split) // batch)
    average = training._weight_average(model, t.average_epochs, steps)
    groups = training._param_groups(model, t)
    optimizer = torch.optim.AdamW(groups, t.lr, weight_decay=t.weight_decay, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, training.LearningRate(stages, steps))
    alpha = class_alpha(split.labels, cfg.model.num_classes).to(device)
    loss_fn = training.training_loss(alpha, t)
    net = torch.compile(model, backend=compile_backend) if compile_backend else model
    dies = {"train": data.datasets["train"], "val": data.datasets["train"]}
    parts = (average, loss_fn, optimizer, scheduler, dies, cfg, device)
    runner = training._Epochs(net, *parts, False)
    if on_device:
        batches = _device_batches(data.datasets["train"], device, batch, t.seed)
    else:
        pin = pinned and device.type == "cuda"
        loader = die_loader(data.datasets["train"], batch, True, t.seed, cfg.data.num_workers, pin)
        batches = _cycle(loader)
    return _Trainer(runner, model, batches, batch)


def _fit_reference(check, model, split) -> None:
    """The golden dies of the step dies: fitted once, then copied into each new model."""
    reference = getattr(model.image_encoder, "reference", None)
    if reference is None:
        return
    if "reference" not in check.shared:
        model.fit_reference(split.images, split.metadata["fab"].to_numpy(), split.labels)
        check.shared["reference"] = reference.state_dict()
    reference.load_state_dict(check.shared["reference"])


def _cycle(loader) -> Iterator[dict]:
    while True:
        yield from loader


def _device_batches(dataset, device, batch: int, seed: int) -> Iterator[dict]:
    """Batches drawn at random from the whole split, held on the device once."""
    everything = dataset.__getitems__(list(range(len(dataset))))
    held = {k: v.to(device) for k, v in everything.items()}
    g = torch.Generator(device=device).manual_seed(seed)
    while True:
        idx = torch.randint(0, len(dataset), (batch,), device=device, generator=g)
        yield {k: v[idx] for k, v in held.items()}


def _measure(check, trainer: _Trainer, stage: int, steps: int | None = None) -> dict:
    """Dies/s of `steps` timed steps after the warm-up, with data wait, GPU use and memory."""
    s, device, runner = check.sizes, check.device, trainer.runner
    steps = min(steps or s.steps, s.steps)
    unwrap(trainer.model).set_head_trainable(stage == 2)
    runner.model.train()
    gen = torch.Generator(device=device).manual_seed(0)
    warm_started = time.perf_counter()
    for _ in range(s.warmup):
        runner._step(next(trainer.batches), stage, gen)
    _sync(device)
    warmup_s = time.perf_counter() - warm_started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    waited, dies, done = 0.0, 0, 0
    with UtilizationSampler() as util:
        started = time.perf_counter()
        while done < steps or time.perf_counter() - started < s.measure_s:
            tick = time.perf_counter()
            batch = next(trainer.batches)
            waited += time.perf_counter() - tick
            runner._step(batch, stage, gen)
            dies, done = dies + len(batch["label"]), done + 1
        _sync(device)
        elapsed = time.perf_counter() - started
    return {
        "dies_per_s": round(dies / elapsed, 1),
        "step_ms": round(1000 * elapsed / done, 2),
        "data_wait_share": round(waited / elapsed, 3),
        "gpu_utilization_pct": util.mean,
        "utilization_source": util.source,
        "peak_memory_gib": _peak_gib(device),
        "warmup_s": round(warmup_s, 2),
        "timed_steps": done,
    }


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def _round(value):
    return round(float(value), 5) if isinstance(value, float | np.floating) else value
