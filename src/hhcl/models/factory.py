"""``build_model``: the architectures by name, with the re-ID head on top."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from os import PathLike

from torch import nn

from hhcl.errors import HHCLError
from hhcl.models.head import ReIDModel
from hhcl.models.osnet import OSNET_CHANNELS, osnet
from hhcl.models.pooling import build_pooling
from hhcl.models.resnet import RESNET_LAYERS, resnet
from hhcl.models.resnet_ibn import resnet50_ibn_a
from hhcl.models.vit import VIT_CONFIGS, vit
from hhcl.models.weights import load_weights


def _resnet_builder(name: str) -> Callable[[int], nn.Module]:
    return lambda last_stride: resnet(name, last_stride=last_stride)


def _osnet_builder(name: str) -> Callable[[int], nn.Module]:
    return lambda last_stride: osnet(name)


def _vit_builder(name: str) -> Callable[..., nn.Module]:
    return lambda last_stride, patch_stride=16: vit(name, patch_stride=patch_stride)


# arch name -> constructor(last_stride) of the backbone (the ViTs also take patch_stride)
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **{name: _resnet_builder(name) for name in RESNET_LAYERS},
    "resnet50_ibn_a": lambda last_stride: resnet50_ibn_a(last_stride=last_stride),
    **{name: _osnet_builder(name) for name in OSNET_CHANNELS},
    **{name: _vit_builder(name) for name in VIT_CONFIGS},
}


def list_archs() -> list[str]:
    """The architecture names :func:`build_model` accepts."""
    return list(BACKBONES)


def check_arch(arch: str) -> None:
    """Raise a one-line :class:`HHCLError` when ``arch`` is not a known architecture."""
    if arch in BACKBONES:
        return
    close = difflib.get_close_matches(arch, BACKBONES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise HHCLError(f"unknown architecture {arch!r}{hint}: choose one of {', '.join(BACKBONES)}")


def build_model(arch: str, pooling: str = "avg", num_features: int = 0, last_stride: int = 1, norm: bool = True,
                weights: str | PathLike[str] | None = None, freeze_bn: bool = False,
                patch_stride: int = 16, parts: int = 0) -> ReIDModel:
    """Build the re-ID model ``arch`` with its head; load ``weights`` (a local file) when given.

    - ``pooling``: ``"avg"`` or ``"gem"``.
    - ``num_features``: size of a linear embedding after pooling; 0 keeps the backbone's feature
      (2048 for ResNet-50/101/152 and IBN-ResNet-50, 512 for ResNet-18/34 and every OSNet, 384 for
      ViT-S/16, whose feature is its class token: it takes ``"avg"`` pooling only, which passes it through).
    - ``last_stride``: stride of the last ResNet stage (1 gives a 16x8 map for 256x128 input).
      OSNet's last stage and a ViT have no stride, so they only take 1.
    - ``patch_stride``: a ViT's patch stride; 12 overlaps its 16x16 patches as TransReID does.
    - ``parts``: P > 0 adds the features of P horizontal stripes of the feature map after the
      global one, ``(B, (1+P)*D)`` (see :class:`ReIDModel`); CNN backbones only.
    - ``norm``: L2-normalise the eval-mode output (with parts, each piece, the whole unit length).
    - ``freeze_bn``: keep every BatchNorm in eval mode while training.

    Input ``(B, 3, H, W)`` float32 normalised with the ImageNet mean/std; output ``(B, model.feature_dim)``.
    """
    check_arch(arch)
    if last_stride not in (1, 2):
        raise HHCLError(f"last_stride must be 1 or 2, got {last_stride}")
    if (arch.startswith("osnet") or arch in VIT_CONFIGS) and last_stride != 1:
        raise HHCLError(f"{arch} has no stride in its last stage: use last_stride=1 (got {last_stride})")
    if num_features < 0:
        raise HHCLError(f"num_features must be 0 (no embedding) or positive, got {num_features}")
    backbone_options = _check_vit_options(arch, pooling, patch_stride)
    head_options = _check_parts(arch, parts)
    build_options = {"arch": arch, "pooling": pooling, "num_features": num_features, "last_stride": last_stride,
                     "norm": norm, **backbone_options, **head_options}
    model = ReIDModel(BACKBONES[arch](last_stride, **backbone_options), build_pooling(pooling),
                      num_features=num_features, norm=norm, freeze_bn=freeze_bn, build_options=build_options,
                      **head_options)
    if weights is not None:
        load_weights(model, weights)
    return model


def _check_vit_options(arch: str, pooling: str, patch_stride: int) -> dict[str, int]:
    """The ViT-only build options of ``arch`` (``patch_stride``), after one-line checks of the options a ViT refuses."""
    if arch not in VIT_CONFIGS:
        if patch_stride != 16:
            raise HHCLError(f"patch_stride is an option of the ViT archs ({', '.join(VIT_CONFIGS)}), not of {arch}: "
                            f"leave it at 16 (got {patch_stride})")
        return {}
    patch_size = VIT_CONFIGS[arch]["patch_size"]
    if isinstance(patch_stride, bool) or not isinstance(patch_stride, int) or not 1 <= patch_stride <= patch_size:
        raise HHCLError(f"patch_stride of {arch} must be an integer in 1..{patch_size} (16: no overlap; 12: "
                        f"TransReID's overlapping patches), got {patch_stride!r}")
    if pooling != "avg":
        raise HHCLError(f"{arch}'s feature is its class token, which pooling {pooling!r} would change: use pooling "
                        f"'avg', which passes it through")
    return {"patch_stride": patch_stride}


def _check_parts(arch: str, parts: int) -> dict[str, int]:
    """``{"parts": P}`` when ``parts`` asks for stripes (absent at 0, so files without parts keep their options)."""
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 0:
        raise HHCLError(f"parts must be 0 (global feature only) or a number of horizontal stripes, got {parts!r}")
    if parts and arch in VIT_CONFIGS:
        raise HHCLError(f"model.parts needs a CNN backbone: {arch}'s feature is its class token, not a map to cut "
                        f"into stripes; use parts 0 or a ResNet/OSNet arch")
    return {"parts": parts} if parts else {}
