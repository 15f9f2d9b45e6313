"""ONNX export of a feature model, with a dynamic batch dimension and a parity check.

The exported graph takes ``images``: float32 ``(B, 3, H, W)`` normalised with the ImageNet
mean/std, and returns ``features``: float32 ``(B, D)``, exactly what the PyTorch model returns in
eval mode. After writing the file, :func:`export_onnx` runs it with onnxruntime on random inputs
of batch sizes other than the traced one, and refuses a file whose outputs differ.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hhcl.checksum import CHECKSUM_KEY
from hhcl.errors import HHCLError
from hhcl.files import atomic_file, check_output_file
from hhcl.retrieval.onnx_backend import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    onnx_graph_sha256,
    onnx_session,
    require_module,
)

logger = logging.getLogger("hhcl.export")

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
# The traced batch size differs from every parity batch size, so the check proves the batch
# dimension really is dynamic.
TRACE_BATCH_SIZE = 2
PARITY_BATCH_SIZES = (1, 3)


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduces PyTorch."""

    path: Path
    max_abs_diff: float
    tolerance: float
    parity_batch_sizes: tuple[int, ...]
    feature_dim: int
    input_shape: tuple[int, int, int]
    size_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        height, width = self.input_shape[1:]
        return (
            f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB): images (B, 3, {height}, {width}) -> "
            f"features (B, {self.feature_dim}); onnxruntime parity on batch sizes "
            f"{', '.join(map(str, self.parity_batch_sizes))}: max abs diff {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.0e})"
        )


def export_onnx(
    model: nn.Module,
    output_path: str | os.PathLike,
    height: int = 256,
    width: int = 128,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
    parity_batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    metadata: dict[str, str | int | float] | None = None,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` (in eval mode, on the CPU, fp32) to ONNX and check it with onnxruntime.

    Args:
        model: maps float32 ``(B, 3, height, width)`` to ``(B, D)``; any ``nn.Module`` does. It is
            exported as a CPU copy in eval mode; the model passed in is left as it was.
        output_path: the ``.onnx`` file to write; its folder is created.
        metadata: small facts stored in the file (e.g. ``arch``), read back by
            :func:`hhcl.retrieval.onnx_backend.read_onnx_metadata`.
        tolerance: the largest max abs difference of outputs accepted.

    Returns:
        An :class:`ExportReport`. The file carries a sha256 checksum of its graph, verified by
        :func:`hhcl.retrieval.onnx_backend.onnx_session`. Raises :class:`HHCLError` (and writes
        nothing, keeping any previous file) when parity does not hold, so that a wrong model is
        never left behind to be deployed.
    """
    onnx = require_module("onnx")
    require_module("onnxruntime")
    output_path = Path(output_path)
    check_output_file(output_path)
    if height <= 0 or width <= 0:
        raise HHCLError(f"the input size {height}x{width} is not positive: give --height and --width of at least 1 "
                        f"(the size the model was trained at, e.g. 256 and 128)")
    export_model = _cpu_eval_copy(model)
    seconds = {}

    # Written and checked under a temporary name: a failed export or parity check leaves any previous file.
    with atomic_file(output_path) as staging:
        started = time.perf_counter()
        trace_input = torch.randn(TRACE_BATCH_SIZE, 3, height, width, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            try:
                feature_dim = int(export_model(trace_input).shape[-1])
            except RuntimeError as error:
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise HHCLError(f"the model cannot take {height}x{width} images ({first_line}): give the "
                                f"--height and --width it was trained at") from None
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript; the TorchScript one handles these conv nets exactly and needs nothing more.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                export_model,
                (trace_input,),
                str(staging),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )

        stored = dict(metadata or {})
        stored.update(height=height, width=width, feature_dim=feature_dim)
        proto = onnx.load(str(staging))
        proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(stored, sort_keys=True))
        proto.metadata_props.add(key=CHECKSUM_KEY, value=onnx_graph_sha256(proto))
        onnx.checker.check_model(proto)
        staging.write_bytes(proto.SerializeToString())
        seconds["export"] = time.perf_counter() - started

        started = time.perf_counter()
        session = onnx_session(staging)
        max_abs_diff = _compare(export_model, session, output_path, height, width, parity_batch_sizes, seed + 1)
        seconds["parity"] = time.perf_counter() - started
        if not max_abs_diff <= tolerance:
            raise HHCLError(
                f"ONNX parity failed for {output_path}: max abs diff {max_abs_diff:.3e} between PyTorch and "
                f"onnxruntime exceeds {tolerance:.0e}; the file was not written (shape-dependent Python code in "
                f"forward() is frozen by tracing; otherwise try another --opset)"
            )
    report = ExportReport(
        path=output_path,
        max_abs_diff=max_abs_diff,
        tolerance=tolerance,
        parity_batch_sizes=tuple(parity_batch_sizes),
        feature_dim=feature_dim,
        input_shape=(3, height, width),
        size_bytes=output_path.stat().st_size,
        seconds=seconds,
    )
    logger.debug("%s", report.summary())
    return report


def max_abs_difference(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    height: int = 256,
    width: int = 128,
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    seed: int = 0,
) -> float:
    """The largest ``|PyTorch - onnxruntime|`` over outputs for random ``(b, 3, height, width)`` inputs.

    One random batch per size in ``batch_sizes``; ``model`` runs as a CPU copy in eval mode.
    """
    session = onnx_session(onnx_path)
    return _compare(_cpu_eval_copy(model), session, onnx_path, height, width, batch_sizes, seed)


def _compare(
    model: nn.Module, session, onnx_path, height: int, width: int, batch_sizes: Sequence[int], seed: int
) -> float:
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for batch_size in batch_sizes:
        images = torch.randn(batch_size, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(images).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        if actual.shape != expected.shape:
            raise HHCLError(
                f"{onnx_path} returned shape {actual.shape} for a batch of {batch_size}, "
                f"PyTorch {expected.shape}: the batch dimension is not dynamic"
            )
        largest = max(largest, float(np.abs(actual - expected).max()))
    return largest


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    # A copy, so that the caller's model keeps its device, dtype and train/eval mode.
    return copy.deepcopy(model).float().cpu().eval()
