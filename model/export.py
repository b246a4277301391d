"""ONNX export of both model kinds behind one deployment signature, and its parity check.

Exporter: the default `torch.onnx.export(..., dynamo=True)` path. It captures the model with
`torch.export.export` (which on its own gives a clean ExportedProgram for the wrapper with a
dynamic batch dimension, no graph breaks) and translates that to ONNX. Two caveats at
torch 2.14 / onnxscript 0.7:
- it implements opset 18 and up; asking for 17 ends in a failed down-conversion (logged as a
  traceback) and an opset-18 file, so `opset < 18` here uses the TorchScript exporter
  (`dynamo=False`, deprecated) instead, which writes a true opset-17 file;
- it names intermediate values after aten ops, so an output named "embedding" collides with
  the note encoder's `aten.embedding` value (the checker refuses the graph: not SSA). Outputs
  are therefore exported under neutral names and renamed afterwards (`_rename_outputs`).
`torch.jit.trace` is not used (deprecated).
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from model.batches import DieDataset
from model.config import RunConfig
from model.metrics import decide
from model.network import MultimodalDefectDetector
from model.onnx_runtime import INPUTS, OUTPUTS, iter_batches, load_session, onnx_inputs
from model.predict import model_inputs


class DeployModel(nn.Module):
    """Both kinds behind the deployment signature (see model.onnx_runtime).

    The baseline has no regions and reads no process log: its region_map is a (B, 1) ones
    placeholder and its process_attention (B, 1, 48) zeros; it ignores the note inputs.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.multimodal = isinstance(model, MultimodalDefectDetector)

    def forward(self, image, process, process_missing, note_ids, note_mask):
        """Args: the five deployment inputs. Returns: logits, region_map, attention, embedding."""
        logits, aux = self.model(image, process, note_ids, note_mask, process_missing)
        if self.multimodal:
            return logits, aux["region_map"], aux["process_attention"], aux["fused_embedding"]
        # The placeholders read every input, so that both exporters keep all five graph inputs.
        seen = (note_ids[:, :1] >= 0) | note_mask[:, :1] | process_missing[:, :1]  # B, 1: True
        region_map = seen.to(logits.dtype)  # B, 1 ones
        attention = torch.zeros_like(process).unsqueeze(1)  # B, 1, P
        return logits, region_map, attention, aux["fused_embedding"]


def example_inputs(cfg: RunConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the deployment signature (a few missing cells, half-masked notes)."""
    g = torch.Generator().manual_seed(seed)
    m, S, L = cfg.model, cfg.model.img_size, cfg.model.max_note_len
    note_mask = torch.rand(batch, L, generator=g) < 0.5
    note_mask[0] = False  # one die without a note
    return {
        "image": torch.rand(batch, 3, S, S, generator=g),
        "process": torch.randn(batch, m.process_dim, generator=g),
        "process_missing": torch.rand(batch, m.process_dim, generator=g) < 0.1,
        "note_ids": torch.randint(1, m.vocab_size, (batch, L), generator=g) * note_mask,
        "note_mask": note_mask,
    }


def export_onnx(
    model: nn.Module, cfg: RunConfig, path: str | Path, opset: int = 18, verbose: bool = False
) -> Path:
    """Export a trained model (either kind) with a dynamic batch dimension.

    Args:
        model: MultimodalDefectDetector or VisionBaseline (left as it is: a copy is exported).
        cfg: its run config (image size, note length, process width).
        path: the .onnx file to write (weights inside it, no external data file).
        opset: 18 and up use the dynamo exporter; below 18 the TorchScript exporter.
        verbose: show the exporter's progress.
    Returns:
        The path, after onnx.checker accepted the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = DeployModel(copy.deepcopy(model).cpu()).eval()
    args = tuple(example_inputs(cfg).values())
    temp = [f"out_{i}" for i in range(len(OUTPUTS))]  # see the module docstring
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    # Not under no_grad: that sends nn.Transformer layers down their fused (unexportable) path.
    with quiet, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(legacy TorchScript|axis name|be removed)")
        if opset >= 18:
            _dynamo_export(wrapper, args, path, temp, opset, verbose)
        else:
            _torchscript_export(wrapper, args, path, temp, opset)
    proto = _rename_outputs(onnx.load(str(path)), dict(zip(temp, OUTPUTS)))
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _dynamo_export(wrapper, args, path: Path, outputs: list[str], opset: int, verbose: bool):
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        wrapper, args, str(path), input_names=list(INPUTS), output_names=outputs,
        dynamic_shapes={name: {0: batch} for name in INPUTS}, opset_version=opset,
        dynamo=True, external_data=False, verbose=verbose,
    )  # fmt: skip


def _torchscript_export(wrapper, args, path: Path, outputs: list[str], opset: int):
    torch.onnx.export(
        wrapper, args, str(path), input_names=list(INPUTS), output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in [*INPUTS, *outputs]},
        opset_version=opset, dynamo=False,
    )  # fmt: skip


def _rename_outputs(proto: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """Rename graph outputs, first moving any inner value that already has a wanted name."""
    graph = proto.graph
    wanted = set(names.values())
    clash = {v: f"{v}__inner" for n in graph.node for v in n.output if v in wanted}
    mapping = {**clash, **names}
    for node in graph.node:
        node.input[:] = [mapping.get(v, v) for v in node.input]
        node.output[:] = [mapping.get(v, v) for v in node.output]
    for value in [*graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)
    return proto


@torch.no_grad()
def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    dataset: DieDataset,
    threshold: float = 0.5,
    n: int = 256,
    batch_size: int = 32,
) -> dict:
    """Compare ONNX Runtime (CPU) with PyTorch on real dies, with and without notes.

    Args:
        model: the PyTorch model that was exported.
        onnx_path: the exported file.
        dataset: dies to score (the first `n`).
        threshold: the model's defect threshold, for decision agreement.
    Returns:
        {"notes": figures, "no_notes": figures, "threshold", "n"}; figures hold
        max_abs_logit, max_abs_prob, max_abs_region_map and decision_agreement.
    """
    session = load_session(onnx_path, providers=["CPUExecutionProvider"])
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    result = {"threshold": float(threshold), "n": min(n, len(dataset))}
    for key, with_notes in (("notes", True), ("no_notes", False)):
        torch_out, onnx_out = [], []
        for batch in iter_batches(dataset, n, batch_size):
            logits, aux = model(**model_inputs(batch, device, with_notes))
            region = aux.get("region_map", torch.ones_like(logits[:, :1]))
            torch_out.append((logits.float().cpu().numpy(), region.float().cpu().numpy()))
            got = session.run(["logits", "region_map"], onnx_inputs(batch, with_notes))
            onnx_out.append(tuple(got))
        result[key] = _compare(torch_out, onnx_out, threshold)
    model.train(was_training)
    return result


def _compare(torch_out: list, onnx_out: list, threshold: float) -> dict:
    logits_t, region_t = (np.concatenate(a) for a in zip(*torch_out))
    logits_o, region_o = (np.concatenate(a) for a in zip(*onnx_out))
    probs_t = torch.softmax(torch.from_numpy(logits_t), 1).numpy()
    probs_o = torch.softmax(torch.from_numpy(logits_o), 1).numpy()
    same = decide(probs_t, threshold) == decide(probs_o, threshold)
    return {
        "max_abs_logit": float(np.abs(logits_t - logits_o).max()),
        "max_abs_prob": float(np.abs(probs_t - probs_o).max()),
        "max_abs_region_map": float(np.abs(region_t - region_o).max()),
        "decision_agreement": float(same.mean()),
    }


def export_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """The FP16 variant of an exported model, for GPU stations (ONNX Runtime CUDA).

    Weights and arithmetic become float16; inputs and outputs stay as the deployment
    signature has them (float32). ONNX Runtime's converter keeps the operators it lists as
    unsafe in float16 (its default block list) in float32.

    Returns: out_path, after onnx.checker accepted the file.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    _sort_nodes(proto.graph)  # the converter appends its input casts at the end
    onnx.save(proto, str(out_path))
    onnx.checker.check_model(str(out_path), full_check=True)
    return Path(out_path)


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Order the graph's nodes so that each comes after the producers of its inputs."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if set(node.input) <= ready:
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or an undefined input at {rest[0].name}")
        pending = rest
    copies = [copy.deepcopy(n) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)
