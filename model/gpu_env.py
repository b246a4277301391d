"""What the GPU check runs on: device, driver, libraries, providers; and GPU utilization.

Utilization comes from NVML: `torch.cuda.utilization()` when its NVML binding is installed,
else the driver's own libnvidia-ml.so.1 through ctypes; without either it is recorded as
unavailable, with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import platform
import threading
import time

import onnxruntime as ort
import torch

LIBRARIES = ("torch", "timm", "onnx", "onnxruntime", "numpy", "pandas", "onnxscript", "tqdm")


def environment() -> dict:
    """Device, driver, CUDA, cuDNN, library versions and ONNX Runtime's providers."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "onnxruntime_providers": ort.get_available_providers(),
        "onnxruntime_device": ort.get_device(),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "device": props.name,
            "device_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "device_count": torch.cuda.device_count(),
            "driver": _nvml_driver(),
        }
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


def _version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "unknown")
    except Exception:  # absent or broken: recorded as missing
        return None


class _Nvml:
    """The few NVML calls the check needs, from the driver's library."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        self._check(self.lib.nvmlInit_v2())
        self.handle = ctypes.c_void_p()
        self._check(self.lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(self.handle)))

    def _check(self, code: int) -> None:
        if code != 0:
            raise RuntimeError(f"NVML call failed with code {code}")

    def driver(self) -> str:
        buf = ctypes.create_string_buffer(96)
        self._check(self.lib.nvmlSystemGetDriverVersion(buf, 96))
        return buf.value.decode()

    def utilization(self) -> int:
        rates = (ctypes.c_uint * 2)()  # gpu, memory percent
        self._check(self.lib.nvmlDeviceGetUtilizationRates(self.handle, rates))
        return int(rates[0])


def _nvml_driver() -> str | None:
    try:
        return _Nvml().driver()
    except Exception as err:  # no driver library: the driver is left unknown
        return f"unknown ({type(err).__name__}: {err})"


def utilization_reader():
    """A callable returning GPU utilization in percent, and a note of where it comes from.

    Returns: (reader or None, note); None when no source works (the note says why).
    """
    if not torch.cuda.is_available():
        return None, "no CUDA device"
    try:
        torch.cuda.utilization()
        return torch.cuda.utilization, "torch.cuda.utilization (NVML)"
    except Exception as err:
        first = f"{type(err).__name__}: {err}"
    try:
        return _Nvml().utilization, "libnvidia-ml.so.1 (NVML via ctypes)"
    except Exception as err:
        return None, f"unavailable: {first}; {type(err).__name__}: {err}"


class UtilizationSampler:
    """Samples GPU utilization in a thread while in use: `with sampler: ...; sampler.mean`."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.read, self.source = utilization_reader()
        self.interval_s, self.samples = interval_s, []
        self._stop = threading.Event()

    def __enter__(self) -> UtilizationSampler:
        self.samples, self._stop = [], threading.Event()
        if self.read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.read is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a failed sample is left out
                self.samples.append(self.read())
            time.sleep(self.interval_s)

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None
