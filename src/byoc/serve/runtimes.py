"""The ways a model worker runs an artifact, one class each behind one interface (`Runtime`).

- `TorchScriptRuntime` ("torchscript"): model.ts through torch, on the GPU or CPU the worker was
  given, as byoc-serve:latest (the GPU image) serves it: fp32, or on a GPU fp16 or bf16 where
  model.json's half-precision record allows it (byoc.serve.gpu).
- `OnnxRuntime` ("onnxruntime-int8", "onnxruntime-fp32"): the artifact's ONNX copy through ONNX
  Runtime on the CPU, for byoc-serve:cpu, which has no torch. The INT8 copy (model.int8.onnx) is
  about twice as fast as fp32 on 2 cores, within the top-1 drop byoc.core.quantize allows.

Both turn an RGB image into the same float32 3xSxS array (torch's eval transform, and its numpy twin
byoc.core.eval_numpy, bit-equal: tests/test_eval_numpy.py) and a float32 NxCxSxS batch into softmax
probabilities on the CPU as numpy, so the handler's stages never touch torch. Which one a worker
runs: `byoc.serve.choice.choose`. torch is imported only by `TorchScriptRuntime` and by `torch_importable`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from byoc.core.errors import ArtifactError, first_line
from byoc.core.eval_numpy import softmax
from byoc.core.model_meta import META_FILE, ModelMeta, read_meta
from byoc.serve import gpu
from byoc.serve.choice import QUANTIZE_HINT, Kind, choose, onnx_entry
from byoc.serve.config import Precision, ServeConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class Runtime(Protocol):
    """One loaded artifact, ready to run: what the handler's stages call."""

    name: str  # Kind.value (or "torch" for a model rebuilt from model.pt)
    meta: ModelMeta
    device: str  # "cpu", "cuda:0", ...
    threads: int  # intra-op threads per call

    def transform(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> the normalised float32 3 x S x S array the model takes."""
        ...

    def infer(self, images: np.ndarray) -> np.ndarray:
        """A float32 N x 3 x S x S batch -> float32 N x classes softmax probabilities."""
        ...


def torch_importable() -> bool:
    """Whether this image has torch (byoc-serve:latest does; byoc-serve:cpu does not)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def load(model_dir: Path, device: str, config: ServeConfig, has_torch: bool | None = None) -> Runtime:
    """The artifact in `model_dir` ready to run, as `choose` decides (`has_torch` None: whether torch
    imports here). Raises ArtifactError (or ConfigError) with a one-line reason."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    kind = choose(meta, config.precision, torch_importable() if has_torch is None else has_torch)
    if kind is Kind.TORCHSCRIPT:
        return TorchScriptRuntime(model_dir, device, config.torch_threads, meta, config.precision)
    return OnnxRuntime(model_dir, meta, kind, config.torch_threads or _cores())


def _cores() -> int:
    from byoc.serve import sizing

    return sizing.cpu_count()


class TorchScriptRuntime:
    """model.ts (or model.pt, rebuilt with torchvision) through torch, on `device`: on CUDA in half
    precision, channels-last, where byoc.serve.gpu.serve_dtype allows it for `meta`, else fp32."""

    def __init__(
        self,
        model_dir: Path,
        device: str,
        threads: int | None,
        meta: ModelMeta | None = None,
        precision: Precision | None = None,
    ):
        import torch

        from byoc.core import artifact
        from byoc.core.preprocessing import eval_transform

        if threads:
            torch.set_num_threads(threads)
        self._device = torch.device(device)
        claim_device(self._device)
        self.dtype = gpu.serve_dtype(
            self._device.type, _capability(self._device), (meta or read_meta(model_dir)).half, precision
        )
        self._torch_dtype, self._channels_last = torch_dtype(self.dtype), self.dtype != gpu.FP32
        with device_scope(self._device):
            self.model, self.meta = artifact.load(
                model_dir, self._device, dtype=self._torch_dtype, channels_last=self._channels_last
            )
        self.name = Kind.TORCHSCRIPT.value if isinstance(self.model, torch.jit.ScriptModule) else "torch"
        self.device = str(self._device)
        self.threads = torch.get_num_threads()
        self._transform = eval_transform(self.meta.preprocessing)

    def transform(self, image: Image.Image) -> np.ndarray:
        return self._transform(image).numpy()

    def infer(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), device_scope(self._device):
            logits: torch.Tensor = self.model(self.batch(images))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def batch(self, images: np.ndarray) -> torch.Tensor:
        """The float32 numpy batch as the model takes it: on its device, in its dtype (channels-last in half)."""
        import torch

        batch = torch.from_numpy(images).to(self._device, non_blocking=True).to(self._torch_dtype)
        return batch.contiguous(memory_format=torch.channels_last) if self._channels_last else batch


def claim_device(device: torch.device) -> None:
    """Make a CUDA `device` this worker's current device: without it, anything that runs on "the
    current device" (an allocation, a stream or a kernel without an explicit device, an extension's
    default) opens a second context on GPU 0, one per worker on a multi-GPU host. cudaSetDevice
    binds the device for the calling host thread
    (https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__DEVICE.html); infer() also runs
    inside `device_scope`, for a model server that calls from another thread than the one that loaded."""
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)


def torch_dtype(name: str) -> torch.dtype:
    """byoc.serve.gpu's dtype name ("fp32", "fp16", "bf16") as torch's."""
    import torch

    return {gpu.FP32: torch.float32, gpu.FP16: torch.float16, gpu.BF16: torch.bfloat16}[name]


def device_scope(device: torch.device):
    """torch.cuda.device(`device`) for a CUDA device (the current device while inside); nothing else."""
    import torch

    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA device's compute capability (major, minor); None for any other device."""
    import torch

    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None  # type: ignore[return-value]


class OnnxRuntime:
    """The artifact's ONNX copy (INT8 or fp32) through ONNX Runtime on the CPU, `threads` per call.

    Threads spin only when `spinning`: in the server they never have the cores to themselves (at
    least two workers on two cores, the JVM, the front), and a spinning pool takes a waiting
    neighbour's CPU, as OpenMP's did for torch (byoc.serve.mms sets OMP_WAIT_POLICY=PASSIVE). ResNet-50,
    2 threads, batch 1, on this 2-core box: alone, spinning saves 1-2 ms of INT8's 15-17 ms and nothing
    of fp32's 49; two such processes at once, spinning off serves 1.7x the calls (INT8 81 against 47
    per second, fp32 25 against 17) at 24 ms p50 against 41 (INT8)."""

    def __init__(self, model_dir: Path, meta: ModelMeta, kind: Kind, threads: int, spinning: bool = False):
        from byoc.core.eval_numpy import eval_transform_numpy

        entry = onnx_entry(meta, kind)
        if entry is None:
            raise ArtifactError(f"{META_FILE} has no entry for {kind.value}")
        self.meta, self.name, self.device, self.threads = meta, kind.value, "cpu", threads
        self.path = Path(model_dir) / entry["file"]
        self._session = _session(self.path, threads, spinning)
        # The INT8 copy records its names only when they differ from the fp32 copy's.
        names = {**(meta.onnx or {}), **entry}
        self._input, self._output = self._check(names.get("input"), names.get("output"))
        self._transform = eval_transform_numpy(meta.preprocessing)

    def transform(self, image: Image.Image) -> np.ndarray:
        return self._transform(image)

    def infer(self, images: np.ndarray) -> np.ndarray:
        [logits] = self._session.run([self._output], {self._input: np.ascontiguousarray(images, dtype=np.float32)})
        return softmax(logits)

    def _check(self, input_name: Any, output_name: Any) -> tuple[str, str]:
        """The session's input and output names, once its shapes match model.json and a zero image runs."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        inp = next((i for i in inputs if i.name == input_name), inputs[0] if len(inputs) == 1 else None)
        out = next((o for o in outputs if o.name == output_name), outputs[0] if outputs else None)
        if inp is None or out is None:
            raise ArtifactError(f"{self.path.name} has inputs {[i.name for i in inputs]}, not {input_name!r}")
        size = self.meta.preprocessing.image_size
        expected = [3, size, size]
        if [d if isinstance(d, int) else None for d in inp.shape[1:]] not in (expected, [None] * 3):
            raise ArtifactError(
                f"{self.path.name} takes {inp.shape}, {META_FILE} says N x {expected}: re-export it (`{QUANTIZE_HINT}`)"
            )
        try:
            probs = self._run_zero(inp.name, out.name, size)
        except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidArgument, ...)
            raise ArtifactError(
                f"{self.path.name} does not run on a 1x3x{size}x{size} image: {first_line(exc)}"
            ) from exc
        if probs.shape != (1, self.meta.num_classes):
            raise ArtifactError(
                f"{self.path.name} does not match {META_FILE}: it outputs {list(probs.shape)} for one image, "
                f"{META_FILE} lists {self.meta.num_classes} labels"
            )
        return inp.name, out.name

    def _run_zero(self, input_name: str, output_name: str, size: int) -> np.ndarray:
        zero = np.zeros((1, 3, size, size), dtype=np.float32)
        return np.asarray(self._session.run([output_name], {input_name: zero})[0])


def _session(path: Path, threads: int, spinning: bool):
    """An ONNX Runtime CPU session for `path`: `threads` intra-op, one call at a time, all graph optimisations."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    if not path.is_file():
        raise ArtifactError(f"{META_FILE} names {path.name}, which is missing from {path.parent}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a corrupt or foreign file
        raise ArtifactError(f"{path} is corrupt or not an ONNX model: {first_line(exc)}") from exc
