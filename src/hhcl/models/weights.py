"""Load weights from a local checkpoint file into a model (nothing is downloaded).

Accepted files: a plain state_dict; ``{"state_dict": ...}`` or ``{"model": ...}`` wrappers (hhcl's
own checkpoints keep the model under ``"model"``); keys prefixed by ``module.`` (DataParallel /
DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``); backbone files of torchvision
(ResNet), the IBN-Net release, torchreid (OSNet) and timm or DeiT (ViT-S/16, also TransReID's
starting points), whose ImageNet or identity heads (``fc.*`` of a ResNet, ``classifier.*``,
``head.*`` of a ViT, and a distilled DeiT's ``dist_token`` and ``head_dist.*``) are not part of a
re-ID model and are skipped. Tensors stored for another input size are adapted by a backbone that
has an ``adapt_checkpoint`` method (a ViT interpolates ``pos_embed`` to its patch grid).
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hhcl.checksum import verified
from hhcl.errors import HHCLError
from hhcl.models.head import ReIDModel

# Heads of classification checkpoints (and a distilled DeiT's extra token and head): skipped when
# the model has no module of that name.
CLASSIFICATION_HEADS = ("classifier.", "fc.", "head.", "head_dist.", "dist_token")
# Prefixes added by wrappers around a model when its state_dict was saved.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    """What :func:`load_weights` did. Key names are the model's (``loaded``, ``missing``) or the file's."""

    path: Path
    kind: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    fresh_head: list[str] = field(default_factory=list)
    #: Tensors that were made to fit the model, each as a note (``"pos_embed 14x14 -> 16x8"``).
    adapted: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def counted(label: str, names: list[str]) -> str:
            if not names:
                return f"0 {label}"
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            return f"{len(names)} {label} ({shown})"

        parts = [f"{len(self.loaded)} loaded", counted("skipped", self.skipped), counted("missing", self.missing),
                 counted("unexpected", self.unexpected)]
        line = f"weights {self.path} ({self.kind}): " + ", ".join(parts)
        if self.adapted:
            line += f" ({'; '.join(self.adapted)})"
        if self.fresh_head:
            line += "; " + self.head_note()
        return line

    def head_note(self) -> str:
        """What a backbone-only file (torchvision, IBN-Net, torchreid) leaves to hhcl's head, in plain words.

        The neck is a BatchNorm that starts as the identity, so a backbone file gives working
        features as loaded; an added ``embedding`` Linear (``num_features > 0``) starts random.
        """
        has_embedding = any(key.startswith("backbone.fc.") for key in self.loaded)
        loaded = "the backbone and its embedding are loaded" if has_embedding else "the backbone is loaded"
        notes = [loaded]
        if self.skipped:
            notes.append(f"the identity classifier ({len(self.skipped)} tensors) is not needed, re-ID compares "
                         "features")
        notes.append("the BatchNorm neck starts as the identity")
        random = [key for key in self.fresh_head if key.startswith("embedding.")]
        if random:
            notes.append(f"the added embedding layer ({', '.join(random)}) starts random: train before evaluating")
        return "; ".join(notes)


def _numpy_safe_globals() -> list:
    """Numpy scalar types: old training scripts store metrics such as ``best_mAP`` as numpy floats."""
    multiarray = getattr(np, "_core", None) or np.core
    dtype_classes = [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")]
    return [multiarray.multiarray.scalar, np.dtype, *dtype_classes]


def read_checkpoint(path: str | PathLike[str]) -> object:
    """``torch.load(path, weights_only=True)`` on CPU, with one-line errors for unreadable files.

    A file written by hhcl carries a sha256 checksum, verified here (and removed from what is
    returned): a corrupt file is an :class:`HHCLError`, never loaded. Other files load unchecked.
    Unpickling never runs code: a file that holds code is refused, and no message advises
    ``weights_only=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise HHCLError(f"weights file {path} not found: give the path of a .pth/.pt/.tar checkpoint")
    if not os.access(path, os.R_OK):
        raise HHCLError(f"cannot read {path}: no read permission on the file for this user; "
                        f"change its permissions (chmod u+r) or copy it")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            # torch warns about pickle protocols it did not write before refusing them: the error says enough
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refused_pickle(path, str(error)) from None
    except PermissionError as error:
        raise HHCLError(f"cannot read {path}: {error.strerror}; change its permissions (chmod u+r)") from None
    except Exception as error:  # noqa: BLE001 - unpickling arbitrary bytes can raise almost any type
        raise _not_a_checkpoint(path, error) from None
    return verified(state, path)


def _refused_pickle(path: Path, message: str) -> HHCLError:
    if "Unsupported global" in message:
        global_name = message.split("Unsupported global:", 1)[1].split("was not")[0].strip()
        return HHCLError(
            f"{path} holds Python objects that safe loading refuses ({global_name}): "
            f"re-save only its tensors with torch.save(model.state_dict(), ...)"
        )
    blocked = re.search(r"unsupported GLOBAL (\S+) whose module", message)
    if blocked:
        return HHCLError(f"{path} holds code (a call to {blocked.group(1)}) and was refused: hhcl never runs code "
                         f"from a weights file; use a file that holds only tensors")
    operand = re.search(r"Unsupported operand \d+", message)
    if operand and _starts_like_a_pickle(path):
        return HHCLError(f"{path} is a pickle that safe loading refuses ({operand.group(0)}); it may hold code and "
                         f"was not loaded: use a file written by torch.save that holds only tensors")
    return _not_a_checkpoint(path, pickle.UnpicklingError(message))


def _starts_like_a_pickle(path: Path) -> bool:
    """A pickle of protocol 2 or later starts with the PROTO opcode; other bytes only parse as garbage."""
    with open(path, "rb") as stream:
        return stream.read(1) == b"\x80"


def _not_a_checkpoint(path: Path, error: BaseException) -> HHCLError:
    if isinstance(error, EOFError):
        detail = "the file is empty or truncated"
    elif isinstance(error, (KeyError, pickle.UnpicklingError, UnicodeDecodeError)):
        detail = "its bytes are neither a zip archive nor a pickle"
    else:
        text = str(error).strip()
        first_sentence = text.splitlines()[0].split(". ")[0] if text else "unreadable"
        detail = f"{type(error).__name__}: {first_sentence}"
    return HHCLError(f"{path} is not a PyTorch checkpoint ({detail}): give a file written by torch.save")


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def extract_state_dict(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside ``checkpoint``, unwrapped and with wrapper prefixes removed."""
    state = checkpoint
    for _ in range(3):
        if _is_state_dict(state):
            break
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        elif isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        else:
            break
    if not _is_state_dict(state):
        if isinstance(state, dict):
            keys = ", ".join(map(str, list(state)[:6]))
            raise HHCLError(f"{path} holds no state_dict (top-level keys: {keys}): expected tensors, or a "
                            f"'state_dict' or 'model' entry holding them")
        raise HHCLError(f"{path} holds a {type(state).__name__}, not a state_dict of tensors")
    cleaned: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        cleaned[key] = tensor
    return cleaned


def saved_build_options(path: str | PathLike[str]) -> dict | None:
    """The ``build_model`` arguments an hhcl checkpoint records (``"build_options"``), else None."""
    checkpoint = read_checkpoint(path)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("build_options"), dict):
        return dict(checkpoint["build_options"])
    return None


def saved_input_size(path: str | PathLike[str]) -> tuple[int, int] | None:
    """``(height, width)`` of the images an hhcl model file was trained on, else None.

    hhcl's ``model.pth`` keeps the training config, whose ``dataset.height`` and ``dataset.width``
    are the size its features are meant for; other files (a bare state_dict, a torchreid or
    torchvision backbone) do not record one.
    """
    checkpoint = read_checkpoint(path)
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    dataset = config.get("dataset") if isinstance(config, dict) else None
    if not isinstance(dataset, dict):
        return None
    height, width = dataset.get("height"), dataset.get("width")
    if all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in (height, width)):
        return height, width
    return None


def _unwrap_model(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


def _adapt_to_backbone(model: nn.Module, file_state: dict[str, torch.Tensor],
                       prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``file_state`` with the tensors the backbone's ``adapt_checkpoint`` replaces, and its notes.

    ``prefix`` is what the file's keys lack before the model's (``"backbone."`` for a backbone file).
    """
    backbone = model.backbone if isinstance(model, ReIDModel) else model
    adapt = getattr(backbone, "adapt_checkpoint", None)
    if adapt is None:
        return file_state, []
    # The file's prefix for the backbone's own keys: none for a backbone file, "backbone." for an hhcl model.
    inner = "backbone." if isinstance(model, ReIDModel) and prefix == "" else ""
    relative = {key[len(inner):]: tensor for key, tensor in file_state.items() if key.startswith(inner)}
    replaced, notes = adapt(relative)
    if not replaced:
        return file_state, notes
    return {key: replaced.get(key[len(inner):], tensor) if key.startswith(inner) else tensor
            for key, tensor in file_state.items()}, notes


def load_weights(model: nn.Module, path: str | PathLike[str], verbose: bool = True) -> LoadReport:
    """Copy the tensors of the checkpoint at ``path`` into ``model``; print one summary line to stderr.

    With a :class:`ReIDModel`, a file whose keys start with ``backbone.`` is a whole hhcl model;
    any other file is a backbone (torchvision, IBN-Net, torchreid, timm) loaded into ``model.backbone``,
    and the re-ID head keeps its fresh initialisation. A ViT's ``pos_embed`` stored for another patch
    grid is interpolated to the model's (noted in the report's ``adapted``). Raises a one-line
    :class:`HHCLError` for a file that is not a checkpoint, one whose tensors match nothing in the
    model, or a tensor whose shape differs from the model's (naming the tensor and both shapes).
    """
    path = Path(path)
    model = _unwrap_model(model)
    file_state = extract_state_dict(read_checkpoint(path), path)
    model_state = model.state_dict()
    arch = model.build_options.get("arch", type(model).__name__) if isinstance(model, ReIDModel) else type(model).__name__

    if isinstance(model, ReIDModel) and not any(key.startswith("backbone.") for key in file_state):
        kind, prefix = "backbone", "backbone."
    else:
        kind, prefix = ("hhcl model" if isinstance(model, ReIDModel) else "state_dict"), ""
    report = LoadReport(path=path, kind=kind)
    file_state, report.adapted = _adapt_to_backbone(model, file_state, prefix)

    to_load: dict[str, torch.Tensor] = {}
    for file_key, tensor in file_state.items():
        model_key = prefix + file_key
        if model_key in model_state:
            expected = model_state[model_key]
            if tuple(tensor.shape) != tuple(expected.shape):
                raise HHCLError(
                    f"{path}: tensor {file_key!r} has shape {tuple(tensor.shape)} in the file but "
                    f"{tuple(expected.shape)} in the {arch} model: the file was saved for another "
                    f"architecture or embedding size"
                )
            to_load[model_key] = tensor
        elif any(file_key.startswith(head) for head in CLASSIFICATION_HEADS) and not any(
            key.startswith(prefix + file_key.split(".", 1)[0] + ".") for key in model_state
        ):
            report.skipped.append(file_key)
        else:
            report.unexpected.append(file_key)

    if not to_load:
        example = ", ".join(list(file_state)[:2])
        raise HHCLError(f"{path}: none of its {len(file_state)} tensors ({example}, ...) belongs to a {arch} "
                        f"model: choose the architecture the file was trained with")

    report.loaded = list(to_load)
    for key in model_state:
        if key in to_load:
            continue
        if not key.startswith(prefix):
            report.fresh_head.append(key)
        elif not key.endswith("num_batches_tracked"):
            # Files saved before PyTorch 0.4.1 have no batch counters: nothing is lost without them.
            report.missing.append(key)
    model.load_state_dict(to_load, strict=False)
    if verbose:
        print(report, file=sys.stderr)
    return report


def interpolate_weights(trained: dict[str, torch.Tensor], initial: dict[str, torch.Tensor],
                        initial_share: float) -> dict[str, torch.Tensor]:
    """``(1 - initial_share) * trained + initial_share * initial``, tensor by tensor (WiSE-FT).

    Weight-space ensembling of a fine-tuned model with the model it started from (Wortsman et al.,
    "Robust fine-tuning of zero-shot models", CVPR 2022): the mixture keeps most of what
    fine-tuning gained and gives back what it lost on data unlike the fine-tuning set. Integer
    tensors (``num_batches_tracked``) and tensors absent from ``initial`` are the trained ones.
    """
    if not 0.0 <= initial_share <= 1.0:
        raise ValueError(f"initial_share must lie in [0, 1], got {initial_share}")
    mixed = {}
    for name, tensor in trained.items():
        start = initial.get(name)
        if start is None or not tensor.is_floating_point():
            mixed[name] = tensor
            continue
        if start.shape != tensor.shape:
            raise ValueError(f"{name}: the initial tensor has shape {tuple(start.shape)}, the trained one "
                             f"{tuple(tensor.shape)}")
        mixed[name] = torch.lerp(tensor, start.to(tensor.device, tensor.dtype), initial_share)
    return mixed


class OutputWeights:
    """The model that is evaluated and saved: the trained weights, optionally averaged over the
    optimizer's steps (``model.ema_decay``), then mixed with the starting weights (``model.init_mix``).

    The average is an exponential moving average of the iterates (torch's ``AveragedModel``), the
    mean net that MMT evaluates: each step's sampling noise, and the swings from one epoch's
    pseudo-labels to the next, are smoothed out of the saved model. The mixture is WiSE-FT's
    (:func:`interpolate_weights`), in a copy refreshed at each call. With both off the output is
    the trained model itself. Training, and the features clustered each epoch, use the trained weights.
    """

    def __init__(self, model, initial_share: float, ema_decay: float = 0.0) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.initial_share = float(initial_share)
        self.initial = ({name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
                        if self.initial_share > 0 else None)
        self.average = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
                        if ema_decay > 0 else None)
        self._mixed = None

    def after_step(self, trained) -> None:
        """Fold the weights of one optimizer step into the average (nothing without ``ema_decay``)."""
        if self.average is not None:
            self.average.update_parameters(trained)

    def state_dict(self) -> dict | None:
        """The average's state for ``--resume`` (``None`` without ``ema_decay``)."""
        return None if self.average is None else {k: v.cpu() for k, v in self.average.state_dict().items()}

    def load_state_dict(self, state: dict | None, trained) -> None:
        """Restore :meth:`state_dict`; a checkpoint without an average starts it from ``trained``."""
        if self.average is None:
            return
        if state is None:
            import logging

            logging.getLogger("hhcl").info("model.ema_decay: the checkpoint holds no weight average; it starts "
                                           "from the resumed weights")
            self.average.module.load_state_dict(trained.state_dict())
            self.average.n_averaged.fill_(1)
            return
        self.average.load_state_dict(state)

    def model(self, trained):
        source = trained if self.average is None else self.average.module
        if self.initial is None:
            return source
        import copy

        if self._mixed is None:
            self._mixed = copy.deepcopy(source)
        self._mixed.load_state_dict(interpolate_weights(source.state_dict(), self.initial, self.initial_share))
        return self._mixed.eval()
