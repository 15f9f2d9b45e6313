"""Running an exported model with onnxruntime: the file's input/output names and stored facts.

:func:`hhcl.export.export_onnx` writes such files; the onnx backend of
:class:`hhcl.retrieval.FeatureExtractor` runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from hhcl.checksum import CHECKSUM_KEY, check_digest
from hhcl.errors import HHCLError

INPUT_NAME = "images"
OUTPUT_NAME = "features"
# The metadata entry holding the export's facts (arch, input size, feature_dim) as JSON.
METADATA_KEY = "hhcl"


def onnx_session(onnx_path: str | os.PathLike, device: str = "cpu"):
    """An ``onnxruntime.InferenceSession`` for ``onnx_path``; a bad file is an :class:`HHCLError`.

    A file written by :func:`hhcl.export.export_onnx` has its checksum verified: a corrupt one is refused.

    ``device`` "cuda" uses the CUDA provider when onnxruntime has it, else the CPU.
    """
    ort = require_module("onnxruntime")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise HHCLError(f"ONNX file {onnx_path} not found; write one with `hhcl export`")
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(onnx_path), providers=providers)
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HHCLError(
            f"{onnx_path} is not a readable ONNX model ({first_line}); re-export it with `hhcl export`"
        ) from None
    stored_digest = session.get_modelmeta().custom_metadata_map.get(CHECKSUM_KEY)
    if stored_digest is not None:
        onnx = require_module("onnx")
        check_digest(stored_digest, onnx_graph_sha256(onnx.load(str(onnx_path))), onnx_path)
    input_names = [node.name for node in session.get_inputs()]
    if input_names != [INPUT_NAME]:
        raise HHCLError(
            f"{onnx_path} takes inputs {input_names}, not [{INPUT_NAME!r}]; re-export it with `hhcl export`"
        )
    return session


def onnx_graph_sha256(proto) -> str:
    """The hex sha256 of an ONNX model's graph (nodes and weights), stored by :func:`hhcl.export.export_onnx`."""
    return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()


def read_onnx_metadata(session) -> dict:
    """The facts :func:`hhcl.export.export_onnx` stored in the file (``height``, ``width``, ``feature_dim``, ...)."""
    stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return json.loads(stored) if stored else {}


def require_module(module_name: str):
    """Import ``onnx`` or ``onnxruntime``, or say which extra installs it."""
    try:
        return __import__(module_name)
    except ImportError:
        raise HHCLError(f"ONNX support needs the {module_name} package: pip install 'hhcl[onnx]'") from None
