"""Two-stage training of the multimodal model (and, by the same loop, the vision baseline).

Stage 1 aligns image and process embeddings (contrastive loss only, head frozen); stage 2
trains everything with focal + contrastive + attention-entropy loss. Each epoch calibrates
the defect threshold on validation so the escape rate stays under target; the best epoch is
the one whose threshold costs the fewest false positives. The validation figures set the
number of epochs: `stage2_epochs` is only a maximum, training stops `patience` epochs after
the validation FPR last fell by `min_delta`, and every `lr_patience` epochs without such
progress it goes back to the best weights and cuts the learning rate, so a later epoch can
refine the best but not undo it.
Stage 2 validates, and keeps, an exponential moving average of the weights
(`train.average_epochs`).
Under torchrun the ranks train on disjoint shards with DDP; rank 0 validates and writes.

    python -m model.train --config configs/cpu.yaml data_dir=data/default
    torchrun --nproc_per_node 4 -m model.train --config configs/gpu.yaml --kind multimodal
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from model import distributed as ddp
from model.batches import die_loader
from model.calibrate import OperatingPoint, choose_threshold
from model.checkpoint import (
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    save_trained,
    unwrap,
)
from model.config import RunConfig, load_config
from model.data import augment_batch, shuffle_parameters
from model.front_end import FrontEndDataset, compute_front_end
from model.losses import MultimodalLoss, class_alpha
from model.metrics import decide, escape_rate, false_positive_rate, macro_f1
from model.network import build_model
from model.predict import model_inputs, pick_device, predict

if TYPE_CHECKING:  # a type only: training itself runs without the note tokenizer's library
    from model.prepare import Prepared

KINDS = ("baseline", "multimodal")
SATURATED_FPR = 0.5  # above this validation FPR, progress is also read off the validation loss


@dataclass
class TrainResult:
    """What a finished training run leaves behind."""

    kind: str
    folder: Path
    model: nn.Module
    operating_point: OperatingPoint | None  # None while the run is unfinished (max_epochs)
    history: list[dict]
    best_epoch: int
    seconds: float


def train_model(
    kind: str,
    data: Prepared,
    cfg: RunConfig,
    folder: str | Path,
    resume: bool = True,
    progress: bool = True,
    max_epochs: int | None = None,
    on_epoch: Callable[[int, int, dict], None] | None = None,
) -> TrainResult:
    """Train one model kind, checkpointing every epoch and resuming from the last one.

    Args:
        kind: "multimodal" or "baseline".
        data: the prepared splits (train and val are used).
        cfg: the run's configuration.
        folder: this model's run folder (checkpoints, history, model.pt).
        resume: continue from folder/checkpoints/last.pt when it exists.
        progress: show progress bars with live figures.
        max_epochs: stop after this many epochs in this call (a time-boxed job resumes later).
        on_epoch: called on rank 0 after each epoch with (epochs done, epochs planned, the
            epoch's history row), e.g. to publish progress.

    Under torchrun (WORLD_SIZE > 1) every rank calls this with the same arguments; rank 0
    alone touches `folder`, and every rank returns the same result.
    """
    started = time.perf_counter()
    folder, t = Path(folder), cfg.train
    device = ddp.setup(pick_device(t.device))
    progress = progress and ddp.is_main()
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal activations slow CPU training tenfold
        if t.threads:
            torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    model = build_model(cfg.model, kind).to(device)
    if hasattr(model, "fit_reference") and ddp.is_main():  # the other ranks get it from wrap
        train = data.splits["train"]
        model.fit_reference(train.images, train.metadata["fab"].to_numpy(), train.labels)
    stages, steps = _stage_plan(kind, t), _steps_per_epoch(len(data.datasets["train"]), t)
    average = _weight_average(model, t.average_epochs, steps)  # a copy of the plain model
    net = ddp.wrap(model, device)  # all ranks now hold rank 0's weights and buffers
    dies = _training_dies(model, data, cfg, device)
    optimizer = torch.optim.AdamW(_param_groups(model, t), lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LearningRate(stages, steps))
    alpha = class_alpha(data.splits["train"].labels, cfg.model.num_classes).to(device)
    loss_fn = training_loss(alpha, t)
    state = {
        "epoch": 0,
        "history": [],
        "best": None,
        "best_epoch": -1,
        "stale": 0,
        "mark": None,  # the validation FPR that last counted as progress
        "lowest_loss": None,  # the lowest validation loss so far
        "fingerprint": _fingerprint(kind, cfg, data),
    }
    last = folder / "checkpoints" / "last.pt"
    saved = ddp.from_main(read_checkpoint, last, state["fingerprint"]) if resume else None
    if saved is not None:
        state = restore_checkpoint(saved, model, optimizer, scheduler, average)
    runner = _Epochs(net, average, loss_fn, optimizer, scheduler, dies, cfg, device, progress)
    stop = len(stages) if max_epochs is None else min(len(stages), state["epoch"] + max_epochs)
    while state["epoch"] < stop and state["stale"] < t.patience:
        epoch, stage = state["epoch"], stages[state["epoch"]]
        row = runner.run(epoch, stage)
        _track_best(state, row, runner.evaluated(stage), folder, t.min_delta)
        row["lr_cut"] = _plateaued(state, t)
        if row["lr_cut"]:
            _back_to_best(folder, model, average, scheduler, t.lr_decay)
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if ddp.is_main():
            save_checkpoint(last, model, optimizer, scheduler, state, average)
            if on_epoch:
                on_epoch(state["epoch"], len(stages), row)
            _write_history(folder / "history.csv", state["history"])
    point = None
    if state["epoch"] >= len(stages) or state["stale"] >= t.patience:  # finished: keep the best
        best = ddp.from_main(torch.load, folder / "best.pt", weights_only=True, map_location="cpu")
        model.load_state_dict(best)
        point = OperatingPoint(**state["best"])
        if t.fpr_budget:  # the best epoch's validation again, its threshold within the budget
            point = ddp.from_main(_budget_point, model, dies["val"], t)
        if ddp.is_main():
            save_trained(folder / "model.pt", model, kind, cfg, point)
    seconds = time.perf_counter() - started
    return TrainResult(kind, folder, model, point, state["history"], state["best_epoch"], seconds)


def _training_dies(model: nn.Module, data: Prepared, cfg: RunConfig, device) -> dict:
    """The train and val dies as training reads them: with the image front end computed
    beforehand when `train.front_end_views` is set and the model has one, else as prepared."""
    t = cfg.train
    dies = {s: data.datasets[s] for s in ("train", "val")}
    if not (t.front_end_views and hasattr(model, "image_encoder")):
        return dies
    encoder, size = model.image_encoder, 2 * t.batch_size
    views = t.front_end_views
    train = compute_front_end(
        encoder, dies["train"], size, device, views, t.seed, torch.float16, t.optics_jitter
    )
    return {"train": train, "val": compute_front_end(encoder, dies["val"], size, device)}


def _fingerprint(kind: str, cfg: RunConfig, data: Prepared) -> str:
    """What a checkpoint must match to be resumed: the kind, model, training, data and, when
    distributed, the world size (it sets the steps per epoch)."""
    parts = [kind, cfg.to_dict()["model"], cfg.to_dict()["train"], data.digest]
    spec = json.dumps(parts + ([ddp.world_size()] if ddp.is_active() else []))
    return hashlib.blake2b(spec.encode(), digest_size=16).hexdigest()


def _param_groups(model: nn.Module, t) -> list[dict]:
    """Fusion gates learn at their own rate (they start at zero) and are not decayed."""
    gates, rest = [], []
    for name, p in model.named_parameters():
        (gates if name.endswith(".alpha") else rest).append(p)
    groups = [{"params": rest}]
    if gates:
        groups.append({"params": gates, "lr": t.gate_lr, "weight_decay": 0.0})
    return groups


def training_loss(alpha: torch.Tensor, t) -> MultimodalLoss:
    """The loss of both stages, weighted as the config's `train` section says."""
    return MultimodalLoss(
        alpha,
        t.focal_gamma,
        t.lambda_contrastive,
        t.lambda_entropy,
        t.temperature,
        lambda_process=t.lambda_process,
        lambda_image=t.lambda_image,
    )


def _stage_plan(kind: str, t) -> list[int]:
    """The stage of each epoch: [1, 1, 2, 2, ...]; the baseline has no alignment stage."""
    if kind == "baseline":
        return [2] * t.baseline_epochs
    return [1] * t.stage1_epochs + [2] * t.stage2_epochs


def _steps_per_epoch(train_dies: int, t) -> int:
    """Batches of train.batch_size per rank and epoch; each rank holds 1/world of the dies."""
    shard = math.ceil(train_dies / ddp.world_size())
    steps = math.ceil(shard / t.batch_size)
    return min(steps, t.max_batches_per_epoch) if t.max_batches_per_epoch else steps


class LearningRate:
    """The learning-rate factor by step: constant in stage 1, then a warm-up of half an epoch
    and constant again, times `scale`, which each plateau cuts (`_back_to_best`).

    A callable object, so the scheduler's state (and a resumed run) keeps `scale`.
    """

    def __init__(self, stages: list[int], steps: int):
        self.first = stages.index(2) * steps if 2 in stages else len(stages) * steps
        self.warmup = max(1, steps // 2)
        self.scale = 1.0

    def __call__(self, step: int) -> float:
        s = step - self.first
        return self.scale * (1.0 if s < 0 else min(1.0, (s + 1) / self.warmup))


def _plateaued(state: dict, t) -> bool:
    """Whether the last `lr_patience` stage-2 epochs all failed to beat the best one (and
    training goes on)."""
    stale = state["stale"]
    return 0 < stale < t.patience and t.lr_patience > 0 and stale % t.lr_patience == 0


def _back_to_best(folder: Path, model: nn.Module, average, scheduler, decay: float) -> None:
    """Restart from the best weights kept so far at `decay` times the learning rate."""
    best = ddp.from_main(torch.load, folder / "best.pt", weights_only=True, map_location="cpu")
    model.load_state_dict(best)
    if average is not None:
        average.module.load_state_dict(best)
    for factor in {id(f): f for f in scheduler.lr_lambdas}.values():
        factor.scale *= decay


def _weight_average(model: nn.Module, epochs: float, steps: int) -> AveragedModel | None:
    """An exponential moving average of the weights over about `epochs` epochs, or None for 0.

    Its decay warms up as (1 + n) / (10 + n) after n updates, so a short run's average is not
    held back by its first, untrained weights. Buffers (BatchNorm statistics, the golden
    references) follow the model.
    """
    if epochs <= 0:
        return None
    decay = 1.0 - 1.0 / max(1.0, epochs * steps)

    @torch.no_grad()
    def update(averaged: list, current: list, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=False)


def _track_best(state: dict, row: dict, model: nn.Module, folder: Path, min_delta: float) -> None:
    """Keep the stage-2 epoch with the lowest validation FPR at the escape target; count the
    epochs since the FPR last fell by at least `min_delta` (a die or two is noise). While the
    FPR is still above SATURATED_FPR (a model that does not yet rank the hardest defects above
    the good dies, so its FPR barely moves), a new lowest validation loss counts as progress
    too: on data it finds hard, training is not cut short before it has learnt anything."""
    if row["stage"] != 2:
        return
    score = (row["val_fpr"], row["val_escape"])
    best = state["best"]
    if best is None or score < (best["val_fpr"], best["val_escape"]):
        state["best"] = {k: row[k] for k in ("threshold", "val_escape", "val_fpr")} | {
            "escape_target": row["escape_target"],
            "val_defective": row["val_defective"],
            "val_good": row["val_good"],
        }
        state["best_epoch"] = row["epoch"]
        if ddp.is_main():
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(unwrap(model).state_dict(), folder / "best.pt")
    mark, lowest_loss = state.get("mark"), state.get("lowest_loss")
    loss_fell = lowest_loss is None or row["val_loss"] < lowest_loss
    if loss_fell:
        state["lowest_loss"] = row["val_loss"]
    if mark is None or row["val_fpr"] <= mark - min_delta:
        state["mark"], state["stale"] = row["val_fpr"], 0
    elif loss_fell and row["val_fpr"] >= SATURATED_FPR:  # flags most good dies, yet learns
        state["stale"] = 0
    else:
        state["stale"] += 1


def _budget_point(model: nn.Module, val, t) -> OperatingPoint:
    out = predict(model, val, batch_size=2 * t.batch_size)
    return choose_threshold(out["probs"], out["labels"], t.escape_target, t.fpr_budget)


def _write_history(path: Path, history: list[dict]) -> None:
    pd.DataFrame(history).to_csv(path, index=False)  # stage-1 rows lack the stage-2 terms


class _Epochs:
    """One epoch of training plus its validation, with the run's fixed parts bound."""

    def __init__(self, model, average, loss_fn, optimizer, scheduler, dies, cfg, device, progress):
        self.model, self.average, self.loss_fn = model, average, loss_fn
        self.optimizer, self.scheduler = optimizer, scheduler
        self.dies, self.cfg, self.device, self.progress = dies, cfg, device, progress
        self.autocast = device.type == "cuda" and cfg.train.bf16
        self.turns = not getattr(unwrap(model), "keeps_orientation", False)

    def evaluated(self, stage: int) -> nn.Module:
        """The weights validated and kept: stage 2's moving average when there is one."""
        if stage == 2 and self.average is not None and self.average.n_averaged > 0:
            return self.average.module
        return unwrap(self.model)

    def run(self, epoch: int, stage: int) -> dict:
        t = self.cfg.train
        torch.manual_seed(ddp.rank_seed(t.seed * 1000 + epoch))  # dropout: same on resume
        unwrap(self.model).set_head_trainable(stage == 2)
        started = time.perf_counter()
        train = self._train(epoch, stage)
        val = ddp.from_main(self._validate, self.evaluated(stage))  # the whole val split
        return {
            "epoch": epoch,
            "stage": stage,
            **train,
            **val,
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - started, 2),
        }

    def _train(self, epoch: int, stage: int) -> dict:
        t, device = self.cfg.train, self.device
        self.model.train()
        train = self.dies["train"]
        loader = die_loader(
            train.view(epoch) if isinstance(train, FrontEndDataset) else train,
            t.batch_size,
            shuffle=True,
            seed=t.seed * 1000 + epoch,
            num_workers=self.cfg.data.num_workers,
            pin_memory=device.type == "cuda",
            distributed=ddp.is_active(),  # the same permutation on all ranks, one shard each
        )
        gen = torch.Generator(device=device).manual_seed(ddp.rank_seed(t.seed * 1000 + epoch))
        total = _steps_per_epoch(len(self.dies["train"]), t)
        bar = tqdm(
            loader,
            total=total,
            desc=f"epoch {epoch} stage {stage}",
            disable=not self.progress,
            leave=False,
        )
        sums, n, waited, tick = {}, 0, 0.0, time.perf_counter()
        for step, batch in enumerate(bar):
            if step >= total:
                break
            waited += time.perf_counter() - tick
            parts = self._step(batch, stage, gen)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            bar.set_postfix(loss=f"{sums['total'] / n:.4f}")
            tick = time.perf_counter()
        bar.close()
        ddp.sync_buffers(self.model)  # BatchNorm statistics: rank 0's, as DDP keeps them
        means = ddp.average({k: v / n for k, v in sums.items()})  # over all ranks' shards
        return {"train_loss": means["total"], "data_wait_s": round(waited, 3)} | {
            f"train_{k}": v for k, v in means.items() if k != "total"
        }

    def _step(self, batch: dict, stage: int, gen: torch.Generator) -> dict:
        inputs = model_inputs(batch, self.device)
        if inputs["images"] is not None:  # a precomputed front end is already augmented
            inputs["images"] = augment_batch(
                inputs["images"], gen, turns=self.turns, optics=self.cfg.train.optics_jitter
            )
        B = len(batch["label"])  # batch size
        drop = torch.rand(B, device=self.device, generator=gen) < self.cfg.train.note_dropout
        inputs["note_mask"] = inputs["note_mask"] & ~drop[:, None]
        if share := self.cfg.train.process_shuffle:
            inputs["process_logs"], inputs["process_missing"] = shuffle_parameters(
                inputs["process_logs"], inputs["process_missing"], share, gen
            )
        labels = batch["label"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits, aux = self.model(**inputs)
        aux = {k: v.float() for k, v in aux.items()}
        loss, parts = self.loss_fn(logits.float(), labels, aux, stage=stage)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        if stage == 2 and self.average is not None:
            self.average.update_parameters(unwrap(self.model))
        return parts

    def _validate(self, model: nn.Module) -> dict:
        t = self.cfg.train
        out = predict(model, self.dies["val"], batch_size=2 * t.batch_size)
        probs, labels = out["probs"], out["labels"]
        point = choose_threshold(probs, labels, t.escape_target)
        y_pred = decide(probs, point.threshold)
        alpha = self.loss_fn.alpha
        weights = alpha.cpu().numpy()[labels] if alpha is not None else 1.0
        p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
        focal = -weights * (1 - p_true) ** t.focal_gamma * np.log(p_true)
        return {
            "val_loss": float(focal.mean()),
            "threshold": point.threshold,
            "val_escape": escape_rate(labels, y_pred)["rate"],
            "val_fpr": false_positive_rate(labels, y_pred)["rate"],
            "val_macro_f1": macro_f1(labels, y_pred),
            "escape_target": t.escape_target,
            "val_defective": point.val_defective,
            "val_good": point.val_good,
        }


def main(argv: list[str] | None = None) -> None:
    """Command line: train the configured model kinds and print their test figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--kind", choices=[*KINDS, "both"], default="both")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. train.lr=1e-3")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    from model.report import train_and_report  # the command's printing lives apart

    try:  # under torchrun train_and_report joins the process group; leave it at the end
        train_and_report(cfg, KINDS if args.kind == "both" else (args.kind,))
    finally:
        ddp.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
