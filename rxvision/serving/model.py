"""The serving model, its exports and the runtimes that run them.

``ServingModel`` wraps the ``nn.Sequential(backbone, head)`` that training logs with
``mlflow.pytorch`` behind one contract: ``forward(x, return_features=False)`` returns
``{"logits": ...}`` plus ``"features"`` when asked.

Exports: TorchScript (scripted and frozen; TorchScript is in maintenance in PyTorch 2.x
but kept, as the seed asks) and ONNX (ONNX Runtime). Each export is checked against
eager on real images: the largest absolute difference of the logits must stay within a
stated tolerance (1e-3 in fp32), else ``ExportParityError``. ``export_version`` logs the
exports with the registered version: artifacts under ``serving/`` of its run, and tags
``rxvision.serving.<runtime>.*`` on the version.

Runtimes (``Predictor``): eager (``torch.autocast(device_type=...)`` where the device
has fast low precision), TorchScript and ONNX Runtime, on CPU or CUDA.
``select_predictor`` takes the first of a preference list that loads and passes parity
(or, with ``probe``, the fastest measured) and logs which.

``export_version`` also tunes the scoring batch size of each runtime and device
(``rxvision.serving.batch_tuning``): tags ``rxvision.batch_size.<runtime>.<device>``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from rxvision.data.imaging import ImageSpec, load_image
from rxvision.data.presets import EvalPreset
from rxvision.errors import ConfigError, NotFound, RxVisionError
from rxvision.home import Home
from rxvision.serving.batch_tuning import (
    BatchTuningConfig,
    TuningResult,
    load_tuning_config,
    log_tuning,
    tune_batch_sizes,
)

log = logging.getLogger(__name__)

# MLflow draws a progress bar per download: noise in task logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

RUNTIMES = ("onnxruntime-int8", "onnxruntime", "torchscript", "eager")
DEFAULT_PREFERENCE = ("onnxruntime", "torchscript", "eager")
FP32_TOLERANCE = 1e-3
ONNX_OPSET = 17
FILES = {
    "torchscript": "model.torchscript.pt",
    "onnxruntime": "model.onnx",
    "onnxruntime-int8": "model.int8.onnx",
}
ARTIFACT_DIR = "serving"
TAG = "rxvision.serving"


class ExportParityError(RxVisionError):
    """An exported model's outputs differ from eager's by more than the tolerance."""

    exit_code = 8


class RuntimeUnavailable(RxVisionError):
    """A runtime cannot run here (no CUDA provider, no artifact, an export that fails)."""


# --- the model -----------------------------------------------------------------------------


class ServingModel(nn.Module):
    """Backbone and head of a logged classifier, with the serving contract."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor, return_features: bool = False) -> dict[str, torch.Tensor]:
        """``{"logits": (N, classes)}``, plus ``"features": (N, F)`` when asked."""
        features = self.backbone(x)
        out = {"logits": self.head(features)}
        if return_features:
            out["features"] = features
        return out


def serving_model(net: nn.Module) -> ServingModel:
    """A ``ServingModel`` from ``nn.Sequential(OrderedDict(backbone=..., head=...))`` as
    training logs it. (A function, not a classmethod: TorchScript compiles every method of
    a class it meets as a TorchScript class, and this one is not scriptable.)"""
    if isinstance(net, ServingModel):
        return net
    children = dict(net.named_children())
    if "backbone" in children and "head" in children:
        return ServingModel(children["backbone"], children["head"]).eval()
    if isinstance(net, nn.Sequential) and len(net) == 2:
        return ServingModel(net[0], net[1]).eval()
    raise ConfigError(
        f"cannot serve a {type(net).__name__}: expected nn.Sequential(backbone, head) "
        f"(children found: {', '.join(children) or 'none'})"
    )


class _Exported(nn.Module):
    """Tuple outputs for ONNX, which has no dict outputs."""

    def __init__(self, model: ServingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x, return_features=True)
        return out["logits"], out["features"]


@dataclass(frozen=True)
class ModelRef:
    """A model URI resolved: what to download, and how rows name it."""

    uri: str
    pinned_uri: str
    label: str
    registered_name: str | None = None
    version: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def cache_id(self) -> str:
        """The local cache folder's key: the label and the run (a registered model that is
        deleted and created again reuses version numbers, never run ids)."""
        return f"{self.label}@{self.run_id}" if self.run_id else self.label

    @property
    def immutable(self) -> bool:
        """Whether the URI always means the same bytes (a version, a run, a logged model)."""
        return "@" not in self.pinned_uri


@dataclass
class LoadedModel:
    """A model ready for inference, with what scoring needs to know about it."""

    model: ServingModel
    classes: list[str]
    spec: ImageSpec
    ref: ModelRef
    local_dir: Path | None = None
    # temperature scaling fitted on the validation split (1.0: uncalibrated)
    temperature: float = 1.0
    review_threshold: float | None = None

    @property
    def img_size(self) -> int:
        """The input resolution (square)."""
        return self.spec.img_size

    @property
    def label(self) -> str:
        """How prediction rows name the model (``name/version`` or the URI)."""
        return self.ref.label

    def preset(self) -> EvalPreset:
        """The evaluation transforms the model was validated with."""
        return EvalPreset(img_size=self.img_size)

    def tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """Model input from pixels decoded by ``load_image`` under this model's spec."""
        return self.preset()(pixels)

    def load(self, source: bytes | Path, name: str | None = None) -> torch.Tensor:
        """Model input from an image file or its bytes: the training decode, then the
        evaluation transforms (exactly the tensor training evaluated)."""
        return self.tensor(load_image(source, self.spec, name=name))


_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def resolve_model(uri: str, client: Any | None = None) -> ModelRef:
    """Resolve ``models:/name@alias``, ``models:/name/version``, ``models:/m-<id>`` or
    ``runs:/<run>/model`` (an alias is pinned to the version it points at now)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    try:
        if match := _ALIAS.match(uri):
            mv = client.get_model_version_by_alias(match["name"], match["alias"])
            return _version_ref(uri, match["name"], str(mv.version), mv)
        if match := _VERSION.match(uri):
            mv = client.get_model_version(match["name"], match["version"])
            return _version_ref(uri, match["name"], str(mv.version), mv)
    except MlflowException as exc:
        raise NotFound(f"model {uri} not found in the registry: {exc.message}") from exc
    if uri.startswith("runs:/"):
        return ModelRef(uri, uri, uri, run_id=uri.removeprefix("runs:/").split("/", 1)[0])
    if uri.startswith("models:/"):
        return ModelRef(uri, uri, uri)
    raise ConfigError(
        f"model URI {uri!r}: expected models:/name@alias, models:/name/version, "
        "models:/m-<id> or runs:/<run_id>/model"
    )


def _version_ref(uri: str, name: str, version: str, mv: Any) -> ModelRef:
    return ModelRef(
        uri=uri,
        pinned_uri=f"models:/{name}/{version}",
        label=f"{name}/{version}",
        registered_name=name,
        version=version,
        run_id=mv.run_id,
        tags=dict(mv.tags or {}),
    )


def load_model(
    uri: str, *, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> LoadedModel:
    """Download (once per immutable version) and load a logged classifier on CPU."""
    import mlflow.pytorch
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ref = resolve_model(uri, client)
    local = _download(ref, cache_dir or default_cache_dir(), client)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow's pickle-format caution, on every load
        net = mlflow.pytorch.load_model(str(local), map_location="cpu")
    metadata = Model.load(str(local / "MLmodel")).metadata or {}
    classes = metadata.get("classes")
    if not classes:
        raise ConfigError(f"model {uri} has no classes metadata: was it logged by RxVision?")
    # the preprocessing contract: refused when missing or of another decode version
    spec = ImageSpec.from_dict(metadata.get("preprocessing") or {}, source=f"model {uri}")
    model = serving_model(net).eval()
    temperature = float(metadata.get("temperature") or 1.0)
    threshold = metadata.get("review_threshold")
    log.info(
        "loaded %s (%s): %d classes, %s, temperature %.3f",
        uri,
        ref.label,
        len(classes),
        spec.describe(),
        temperature,
    )
    return LoadedModel(
        model,
        [str(c) for c in classes],
        spec,
        ref,
        local,
        temperature=temperature,
        review_threshold=None if threshold is None else float(threshold),
    )


def default_cache_dir() -> Path:
    """``$RXVISION_HOME/cache/serving``."""
    return Home.from_env().cache_dir / "serving"


def cache_key(label: str) -> str:
    """A folder name for a model label."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[-60:]
    return f"{safe}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def artifact_location(ref: ModelRef, client: Any) -> str:
    """Where the model's files are stored, found through ``client``. (MLflow resolves a
    ``models:/`` URI through the default tracking server whatever tracking URI it is
    given, so the location is resolved here, with the client of the right server.)"""
    from mlflow.exceptions import MlflowException

    source = ref.pinned_uri
    try:
        if ref.registered_name and ref.version:
            mv = client.get_model_version(ref.registered_name, ref.version)
            source = str(mv.source)
            if getattr(mv, "model_id", None):
                return str(client.get_logged_model(mv.model_id).artifact_location)
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            return str(client.get_logged_model(model_id).artifact_location)
        if source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            run = client.get_run(run_id)
            found = client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{path or 'model'}'",
            )
            if found:
                return str(found[0].artifact_location)
            return f"{run.info.artifact_uri}/{path}"
    except MlflowException as exc:
        raise NotFound(f"model {ref.uri}: {exc.message}") from exc
    return source


def _download(ref: ModelRef, cache_dir: Path, client: Any) -> Path:
    """The model's local folder; versions are immutable, so one download serves all shards."""
    import mlflow.artifacts

    target = cache_dir / cache_key(ref.cache_id) / "model"
    if ref.immutable and (target / "MLmodel").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".dl-"))
    try:
        location = artifact_location(ref, client)
        got = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(staging), tracking_uri=client.tracking_uri
        )
        if target.exists():
            shutil.rmtree(target)
        Path(got).replace(target)  # the folder itself, whatever its name in the store
    except Exception as exc:
        if isinstance(exc, RxVisionError):
            raise
        raise NotFound(f"cannot download model {ref.uri}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- runtimes ------------------------------------------------------------------------------


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
        with _quiet():
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


# --- exports -------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """TorchScript and the legacy ONNX exporter warn that they are deprecated, every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def export_torchscript(model: ServingModel, path: Path) -> Path:
    """Script (the dict contract survives) and freeze; trace when scripting fails."""
    model = model.eval()
    tmp = _atomic_target(path)
    with _quiet():
        try:
            module: Any = torch.jit.freeze(torch.jit.script(model))
        except Exception as exc:  # a custom backbone TorchScript cannot compile
            log.warning("torch.jit.script failed (%s); tracing instead", exc, exc_info=True)
            example = torch.zeros(1, 3, 64, 64)
            module = torch.jit.freeze(torch.jit.trace(_Exported(model), example).eval())
        torch.jit.save(module, str(tmp))
    tmp.replace(path)
    return path


def export_onnx(model: ServingModel, path: Path, *, img_size: int, opset: int = ONNX_OPSET) -> Path:
    """ONNX with a dynamic batch axis; outputs ``logits`` and ``features``.

    The TorchScript-based exporter (``dynamo=False``): the torch.export-based one needs
    ``onnxscript``, which is not installed, and handles these CNNs no better.
    """
    tmp = _atomic_target(path)
    example = torch.zeros(1, 3, img_size, img_size)
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            _Exported(model.eval()),
            (example,),
            str(tmp),
            dynamo=False,
            input_names=["images"],
            output_names=["logits", "features"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=opset,
        )
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class ParityReport:
    """How far a runtime's logits are from eager's on the same images."""

    runtime: str
    images: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float

    @property
    def passed(self) -> bool:
        """Within tolerance (and finite: NaN never passes)."""
        return bool(np.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance)

    def describe(self) -> str:
        """One line for logs and errors."""
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.runtime} parity on {self.images} images: max |logit diff| "
            f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}), top-1 agreement "
            f"{self.top1_agreement:.3f}: {verdict}"
        )


def check_parity(
    reference: ServingModel, predictor: Predictor, images: torch.Tensor, tolerance: float
) -> ParityReport:
    """Compare ``predictor`` with eager fp32 on CPU on ``images`` (real images, not noise:
    activations of real inputs are what the export has to get right)."""
    with torch.inference_mode():
        expected = reference.eval()(images.cpu())["logits"].float().numpy()
    got = predictor.predict(images)
    diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    agree = float(np.mean(expected.argmax(1) == got.argmax(1))) if expected.size else 1.0
    return ParityReport(predictor.runtime, len(images), diff, tolerance, agree)


@dataclass(frozen=True)
class ExportResult:
    """One export: the file and its parity with eager."""

    runtime: str
    path: Path
    parity: ParityReport


def export_all(
    loaded: LoadedModel, images: torch.Tensor, out_dir: Path, tolerance: float = FP32_TOLERANCE
) -> list[ExportResult]:
    """Export to TorchScript and ONNX and check each on ``images``; ``ExportParityError``
    names the runtime that drifted."""
    cpu = torch.device("cpu")
    results = []
    exports = (
        ("torchscript", export_torchscript, TorchScriptPredictor),
        ("onnxruntime", lambda m, p: export_onnx(m, p, img_size=loaded.img_size), OnnxPredictor),
    )
    for runtime, export, predictor_cls in exports:
        path = export(loaded.model, out_dir / FILES[runtime])
        report = check_parity(loaded.model, predictor_cls(path, cpu), images, tolerance)
        log.info("%s", report.describe())
        if not report.passed:
            raise ExportParityError(f"{loaded.label}: {report.describe()}")
        results.append(ExportResult(runtime, path, report))
    return results


def log_exports(client: Any, ref: ModelRef, results: Sequence[ExportResult]) -> dict[str, str]:
    """Upload exports under ``serving/`` of the version's run; tag the version with each
    artifact URI and parity figure. Returns the tags set."""
    if ref.run_id is None:
        raise ConfigError(f"{ref.uri} has no run to log exports into")
    tags: dict[str, str] = {}
    for result in results:
        client.log_artifact(ref.run_id, str(result.path), ARTIFACT_DIR)
        prefix = f"{TAG}.{result.runtime}"
        tags[f"{prefix}.artifact"] = f"runs:/{ref.run_id}/{ARTIFACT_DIR}/{result.path.name}"
        if np.isfinite(result.parity.max_abs_diff):  # int8 is judged on top-1 instead
            tags[f"{prefix}.max_abs_diff"] = f"{result.parity.max_abs_diff:.3e}"
            tags[f"{prefix}.tolerance"] = f"{result.parity.tolerance:.0e}"
            tags[f"{prefix}.parity_images"] = str(result.parity.images)
    if ref.registered_name and ref.version:
        for key, value in tags.items():
            client.set_model_version_tag(ref.registered_name, ref.version, key, value)
    return tags


# --- picking a runtime for scoring --------------------------------------------------------


@dataclass
class PredictorOptions:
    """How ``select_predictor`` builds runtimes."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "auto"
    tolerance: float = FP32_TOLERANCE
    cache_dir: Path = field(default_factory=default_cache_dir)
    probe: bool = False
    tracking_uri: str | None = None


def build_predictor(
    loaded: LoadedModel, runtime: str, sample: torch.Tensor, options: PredictorOptions
) -> Predictor:
    """One runtime for ``loaded``, parity-checked on ``sample`` (exported runtimes)."""
    device = options.device
    if runtime == "eager":
        return EagerPredictor(loaded.model, device, autocast_dtype(device, options.precision))
    if runtime not in FILES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    path = _runtime_file(loaded, runtime, options)
    predictor: Predictor
    if runtime == "torchscript":
        predictor = TorchScriptPredictor(path, device)
    else:
        predictor = OnnxPredictor(path, device, runtime=runtime)
    if runtime == "onnxruntime-int8":
        # INT8 was accepted on labelled validation images when exported; here only sanity
        if not np.isfinite(predictor.predict(sample[:2])).all():
            raise ExportParityError(f"{loaded.label}: int8 model gives non-finite logits")
        return predictor
    report = check_parity(loaded.model, predictor, sample, options.tolerance)
    if not report.passed:
        raise ExportParityError(f"{loaded.label}: {report.describe()}")
    return predictor


def _runtime_file(loaded: LoadedModel, runtime: str, options: PredictorOptions) -> Path:
    """The version's logged export if it has one, else a local export (cached per version)."""
    folder = options.cache_dir / cache_key(loaded.ref.cache_id)
    path = folder / FILES[runtime]
    if loaded.ref.immutable and path.is_file():
        return path
    artifact = loaded.ref.tags.get(f"{TAG}.{runtime}.artifact", "")
    if artifact.startswith("runs:/"):
        from mlflow.tracking import MlflowClient

        run_id, _, artifact_path = artifact.removeprefix("runs:/").partition("/")
        client = MlflowClient(options.tracking_uri)
        got = client.download_artifacts(run_id, artifact_path, str(folder / ".dl"))
        Path(got).replace(path)
        return path
    if runtime == "onnxruntime-int8":
        raise RuntimeUnavailable(f"{loaded.label} has no validated int8 export")
    if runtime == "torchscript":
        return export_torchscript(loaded.model, path)
    return export_onnx(loaded.model, path, img_size=loaded.img_size)


def select_predictor(
    loaded: LoadedModel,
    preference: Sequence[str],
    sample: torch.Tensor,
    options: PredictorOptions,
) -> Predictor:
    """The first runtime of ``preference`` that builds and passes parity (with ``probe``:
    the fastest of those on ``sample``); eager is the last resort."""
    candidates: list[Predictor] = []
    for runtime in preference:
        try:
            candidates.append(build_predictor(loaded, runtime, sample, options))
        except Exception as exc:  # any failure of one runtime leaves the others
            log.warning("runtime %s unavailable for %s: %s", runtime, loaded.label, exc)
            continue
        if not options.probe:
            break
    if not candidates:
        log.warning("no preferred runtime works for %s: falling back to eager", loaded.label)
        candidates.append(build_predictor(loaded, "eager", sample, options))
    chosen = _fastest(candidates, sample) if len(candidates) > 1 else candidates[0]
    log.info("scoring %s with %s on %s", loaded.label, chosen.runtime, chosen.device)
    return chosen


def _fastest(candidates: Sequence[Predictor], sample: torch.Tensor) -> Predictor:
    timings = {}
    for predictor in candidates:
        predictor.predict(sample)  # warm-up: first calls allocate and plan
        began = time.perf_counter()
        predictor.predict(sample)
        timings[predictor.runtime] = time.perf_counter() - began
    log.info("runtime probe (s per batch of %d): %s", len(sample), timings)
    return min(candidates, key=lambda p: timings[p.runtime])


# --- exporting a registered version --------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_folder_files(
    folder: Path, classes: Sequence[str], limit: int | None = None
) -> list[tuple[Path, int]]:
    """(file, class index) of ``folder/<class>/*`` for the model's ``classes``; folders of
    unknown classes are skipped. ``limit`` takes images round-robin across classes, so a
    sample of any size spans every class it can."""
    index = {name: i for i, name in enumerate(classes)}
    by_class: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("*/*")):
        if path.parent.name in index and path.suffix.lower() in IMAGE_SUFFIXES:
            by_class.setdefault(index[path.parent.name], []).append(path)
    files = [(p, c) for c in sorted(by_class) for p in by_class[c]]
    if limit is not None and len(files) > limit:
        queues = [list(by_class[c]) for c in sorted(by_class)]
        labels = sorted(by_class)
        files = []
        while len(files) < limit:
            for label, queue in zip(labels, queues, strict=True):
                if queue and len(files) < limit:
                    files.append((queue.pop(0), label))
    if not files:
        raise NotFound(f"no images of the model's classes under {folder}/<class>/")
    return files


def load_image_folder(
    folder: Path, loaded: LoadedModel, limit: int | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """Model inputs of ``folder/<class>/*`` (decoded as scoring decodes them) and their
    class indexes in the model's class order (see ``image_folder_files``)."""
    files = image_folder_files(folder, loaded.classes, limit)
    tensors = [loaded.load(path) for path, _ in files]
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    return torch.stack(tensors), labels


def evaluate_model(
    uri: str,
    image_folder: Path,
    *,
    tracking_uri: str | None = None,
    batch_size: int = 32,
    prefix: str = "test_",
) -> dict[str, float]:
    """Top-1, ECE and per-class recall of a model on ``image_folder/<class>/*`` under the
    keys training logs (``test_top1``...), and ``images``: the image count. Images go
    through the scoring path (``load_image`` under the model's own contract, eager fp32):
    e.g. champion and challenger scored on the challenger's test images for the
    registry's regression gate."""
    from rxvision.registry.gates import classification_metrics
    from rxvision.serving.calibration import softmax

    loaded = load_model(uri, tracking_uri=tracking_uri)
    images, labels = load_image_folder(image_folder, loaded)
    predictor = EagerPredictor(loaded.model, torch.device("cpu"))
    logits = np.concatenate(
        [predictor.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    probs = softmax(logits, loaded.temperature)
    metrics = classification_metrics(probs, labels, loaded.classes, prefix=prefix)
    metrics["images"] = float(len(labels))
    return metrics


@dataclass
class ExportSummary:
    """What ``export_version`` exported, checked and logged."""

    label: str
    exports: list[ExportResult]
    int8: Any | None = None  # quantize.Int8Decision
    tags: dict[str, str] = field(default_factory=dict)
    batch_sizes: TuningResult | None = None  # None: not tuned


def export_version(
    uri: str,
    images: torch.Tensor | None = None,
    labels: np.ndarray | None = None,
    *,
    image_folder: Path | None = None,
    calibration_folder: Path | None = None,
    calibration_images: int = 64,
    tolerance: float = FP32_TOLERANCE,
    max_int8_drop_points: float = 1.0,
    tracking_uri: str | None = None,
    work_dir: Path | None = None,
    tuning: BatchTuningConfig | None = None,
) -> ExportSummary:
    """Export a registered version to TorchScript and ONNX, check parity on real images,
    try static INT8 when labels and calibration images are given, and log it all with
    the version.

    Images come preprocessed (``images``, ``labels``) or from ``image_folder``
    (``DIR/<class>/*``, labelled by folder): held-out images, on which parity is checked
    and INT8 is accepted or refused. INT8 is calibrated on ``calibration_folder``
    (training images), ``calibration_images`` of them taken round-robin across classes;
    without one, INT8 is not tried (calibrating on the images that judge it would hide
    its error).

    Then the scoring batch size is tuned per runtime and device on the same held-out
    images (``rxvision.serving.batch_tuning``; ``tuning``: a ``BatchTuningConfig``,
    default the serving config's ``batch_tuning``); a tuning failure is logged and
    leaves the export as it is.
    """
    from mlflow.tracking import MlflowClient

    from rxvision.serving.quantize import static_int8

    loaded = load_model(uri, tracking_uri=tracking_uri)
    if images is None:
        if image_folder is None:
            raise ConfigError("export needs real images: give images or an image folder")
        images, labels = load_image_folder(image_folder, loaded)
    calibration = None
    if calibration_folder is not None:
        calibration, _ = load_image_folder(calibration_folder, loaded, limit=calibration_images)
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        out_dir = Path(tmp)
        results = export_all(loaded, images, out_dir, tolerance)
        decision = None
        if labels is not None and calibration is not None:
            onnx_path = out_dir / FILES["onnxruntime"]
            int8_path = out_dir / FILES["onnxruntime-int8"]
            decision = static_int8(
                onnx_path,
                calibration,
                images,
                labels,
                int8_path,
                max_drop_points=max_int8_drop_points,
            )
            if decision.kept:
                int8_parity = ParityReport("onnxruntime-int8", len(images), float("nan"), 0.0, 0.0)
                results.append(ExportResult("onnxruntime-int8", int8_path, int8_parity))
        tags = log_exports(client, loaded.ref, results)
        tuned = _tune_batch_sizes(loaded, results, images, client, out_dir, tuning)
        if tuned is not None:
            tags.update(tuned.tags())
    if decision is not None and loaded.ref.registered_name and loaded.ref.version:
        int8_tags = {
            f"{TAG}.int8.kept": str(decision.kept).lower(),
            f"{TAG}.int8.top1_fp32": f"{decision.top1_fp32:.4f}",
            f"{TAG}.int8.top1_int8": f"{decision.top1_int8:.4f}",
        }
        for key, value in int8_tags.items():
            client.set_model_version_tag(loaded.ref.registered_name, loaded.ref.version, key, value)
        tags.update(int8_tags)
    return ExportSummary(loaded.label, results, decision, tags, tuned)


def _tune_batch_sizes(
    loaded: LoadedModel,
    results: Sequence[ExportResult],
    images: torch.Tensor,
    client: Any,
    out_dir: Path,
    tuning: BatchTuningConfig | None,
) -> TuningResult | None:
    """Tune and log the batch size of eager and each export (``batch_tuning``); None
    when tuning is off or failed (logged: an export never fails for it)."""
    try:
        config = tuning or load_tuning_config()
        if not config.enabled:
            log.info(
                "batch tuning is off (batch_tuning.enabled: false): %s not tuned", loaded.label
            )
            return None
        factories: dict[str, Callable[[torch.device], Predictor]] = {
            "eager": lambda d: EagerPredictor(loaded.model, d, autocast_dtype(d))
        }
        for result in results:
            factories[result.runtime] = _factory(result)
        tuned = tune_batch_sizes(factories, images, config)
        log_tuning(client, loaded.ref, tuned, out_dir / "batch_tuning")
        return tuned
    except Exception as exc:  # tuning is an optimisation: the export stands without it
        log.warning(
            "batch tuning of %s failed, no batch size tagged: %s", loaded.label, exc, exc_info=True
        )
        return None


def _factory(result: ExportResult) -> Callable[[torch.device], Predictor]:
    """A predictor of ``result``'s file on a given device."""
    if result.runtime == "torchscript":
        return lambda device: TorchScriptPredictor(result.path, device)
    return lambda device: OnnxPredictor(result.path, device, runtime=result.runtime)
