"""The runtimes that score a batch (``Predictor``): eager PyTorch, TorchScript, ONNX Runtime.

Eager runs under ``torch.autocast(device_type=...)`` where the device has fast low
precision; each runs on CPU or CUDA and returns fp32 logits.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from rxvision.errors import ConfigError, RxVisionError

RUNTIMES = ("onnxruntime-int8", "onnxruntime", "torchscript", "eager")


class RuntimeUnavailable(RxVisionError):
    """A runtime cannot run here (no CUDA provider, no artifact, an export that fails)."""


class Predictor(Protocol):
    """Runs a batch of preprocessed images and returns fp32 logits."""

    runtime: str
    device: str

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Logits of an (N, 3, H, W) float batch, as a (N, classes) float32 array."""
        ...


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but CUDA is not available; use device=cpu or auto")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"device {requested!r}: choose auto, cpu or cuda")
    return torch.device(requested)


def native_bf16_cpu() -> bool:
    """Whether the CPU has bf16 instructions (AVX-512 BF16 or AMX): without them bf16
    autocast is emulated and several times slower than fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in text for flag in (" avx512_bf16", " amx_bf16"))


def cpu_has_vnni() -> bool:
    """Whether the CPU has VNNI (int8 dot products without 16-bit saturation)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_vnni" in text or " avx_vnni" in text or " amx_int8" in text


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None runs fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if native_bf16_cpu() else None


class EagerPredictor:
    """The PyTorch module itself, under ``torch.autocast`` when a dtype is given."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        runtime: str = "eager",
    ) -> None:
        # a copy on an accelerator: the CPU original stays the parity reference and the
        # source of exports
        on_device = copy.deepcopy(model) if device.type != "cpu" else model
        self.model = on_device.to(device).eval()
        self.torch_device = device
        self.device = str(device)
        self.amp_dtype = amp_dtype
        self.runtime = runtime

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Logits in fp32."""
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=self.torch_device.type,
                dtype=self.amp_dtype,
                enabled=self.amp_dtype is not None,
            ),
        ):
            out = self.model(images.to(self.torch_device, non_blocking=True))
        logits = out["logits"] if isinstance(out, dict) else out
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


class TorchScriptPredictor:
    """A saved TorchScript module."""

    runtime = "torchscript"

    def __init__(self, path: Path, device: torch.device) -> None:
        with quiet_export_warnings():
            self.module = torch.jit.load(str(path), map_location=device).eval()
        self.torch_device = device
        self.device = str(device)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Logits in fp32."""
        with torch.inference_mode():
            out = self.module(images.to(self.torch_device))
        logits = out["logits"] if isinstance(out, dict) else out[0]
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


class OnnxPredictor:
    """An ONNX model in ONNX Runtime (CUDA provider on a GPU, else CPU)."""

    def __init__(
        self, path: Path, device: torch.device, runtime: str = "onnxruntime", threads: int = 0
    ) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeUnavailable("onnxruntime has no CUDAExecutionProvider here")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # ONNX Runtime's threads spin-wait between calls by default: on a few cores they
        # steal the CPU from the threads that download and decode the next batch
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.device = str(device)
        self.runtime = runtime

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Logits in fp32 (the first output)."""
        feed = {self.input_name: images.detach().cpu().numpy().astype(np.float32, copy=False)}
        logits = self.session.run(None, feed)[0]
        return np.asarray(logits, dtype=np.float32)


@contextlib.contextmanager
def quiet_export_warnings() -> Iterator[None]:
    """TorchScript and the legacy ONNX exporter warn that they are deprecated, every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield
