"""``FeatureExtractor``: a trained model as one callable from images to L2-normalised features."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from hhcl.data.images import image_problem, load_resized, resize_to_tensor
from hhcl.data.transforms import normalize_batch
from hhcl.engine.runtime import resolve_device
from hhcl.errors import HHCLError
from hhcl.models.extract import embedded_batches, model_outputs
from hhcl.models.inference import check_precision, inference_context

BACKENDS = ("torch", "onnx")
# The input size when neither the caller nor the weights give one: the usual re-ID size.
DEFAULT_INPUT_SIZE = (256, 128)
# Fewer images than this are embedded without a progress bar.
PROGRESS_MIN_IMAGES = 256


class FeatureExtractor:
    """Images in, ``(N, D)`` float32 L2-normalised features out, from a trained model.

    Preprocessing is the data layer's test transform: bicubic resize to ``height x width``, then
    ImageNet mean/std normalisation. The size is by default the one the model was trained at, as
    an hhcl model file or an ONNX export records it (256x128 for other files). Inputs are embedded
    in batches of ``batch_size``, with a progress bar for long inputs.

    Args:
        arch: the architecture name (``hhcl.models.list_archs()``). hhcl model files and ONNX
            exports record theirs: it is checked against it, and may be None.
        weights: a PyTorch checkpoint (torch backend: an hhcl checkpoint, a state_dict, or a
            torchvision / torchreid / IBN-Net backbone file) or an ``.onnx`` file written by
            :func:`hhcl.export.export_onnx` (onnx backend).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` (CUDA only) autocast; torch backend only.
        height, width: the input size; None takes the size the weights record (see above). An
            ONNX export takes only the size it was exported at.
        backend: ``"torch"``, or ``"onnx"`` to run with onnxruntime (no PyTorch model needed).
        num_workers: image-decoding processes for lists of paths (0 decodes in this process).
        progress: show a progress bar; None shows one for inputs of 256 images or more.

    Example::

        extractor = FeatureExtractor("osnet_x0_25", "osnet_x0_25_msmt17.pth")
        features = extractor(["a.jpg", "b.jpg"])       # (2, 512)
        similarity = features @ features.T
    """

    def __init__(
        self,
        arch: str | None,
        weights: str | os.PathLike,
        device: str = "cpu",
        precision: str = "fp32",
        backend: str = "torch",
        batch_size: int = 64,
        height: int | None = None,
        width: int | None = None,
        num_workers: int = 0,
        progress: bool | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise HHCLError(f"unknown backend {backend!r}: choose 'torch' or 'onnx'")
        if batch_size < 1:
            raise HHCLError(f"batch_size must be at least 1, got {batch_size}")
        self.weights = Path(weights)
        self.device = resolve_device(device)
        self.precision = precision
        self.backend = backend
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        if backend == "torch":
            check_precision(precision, self.device)
            self.model = load_trained_model(arch, self.weights, self.device)
            self.arch = self.model.build_options.get("arch", arch)
            self.feature_dim = int(self.model.feature_dim)
            self.height, self.width = resolve_input_size(self.weights, height, width)
        else:
            if precision != "fp32":
                raise HHCLError(f"the onnx backend runs in fp32; got precision {precision!r}")
            from hhcl.retrieval.onnx_backend import onnx_session, read_onnx_metadata

            self.session = onnx_session(self.weights, device=str(self.device))
            metadata = read_onnx_metadata(self.session)
            stored_arch = metadata.get("arch")
            if arch is not None and stored_arch is not None and stored_arch != arch:
                raise HHCLError(
                    f"{self.weights} was exported from {stored_arch}, not {arch}: pass --arch {stored_arch}"
                )
            self.arch = arch or stored_arch
            self.feature_dim = int(metadata.get("feature_dim", self.session.get_outputs()[0].shape[-1]))
            exported = (int(metadata.get("height", DEFAULT_INPUT_SIZE[0])),
                        int(metadata.get("width", DEFAULT_INPUT_SIZE[1])))
            asked = (exported[0] if height is None else height, exported[1] if width is None else width)
            if asked != exported:
                raise HHCLError(f"{self.weights} was exported for {exported[0]}x{exported[1]} images, not "
                                f"{asked[0]}x{asked[1]}: leave --height/--width out, or export again at that size")
            self.height, self.width = exported

    def settings(self) -> dict:
        """What the features depend on besides the weights file (e.g. for a cache key)."""
        return {
            "arch": self.arch,
            "backend": self.backend,
            "precision": self.precision,
            "height": self.height,
            "width": self.width,
        }

    def __call__(self, images) -> torch.Tensor:
        """Embed ``images``; returns ``(N, D)`` float32, L2-normalised, on the CPU, in input order.

        ``images`` is one of, or a list mixing the single ones:
        - a path (str or ``os.PathLike``) of an image file;
        - a PIL image;
        - an ``(H, W, 3)`` uint8 array, or ``(N, H, W, 3)`` for N images;
        - a tensor batch: uint8 ``(N, 3, H, W)`` images of any size (resized here), or float32
          ``(N, 3, height, width)`` already normalised with the ImageNet mean/std.

        An unreadable file raises :class:`HHCLError` naming it.
        """
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            return self._embed_normalised_tensor(images)
        items = _as_items(images)
        if self.num_workers > 0 and all(isinstance(item, (str, os.PathLike)) for item in items):
            indices, features = self._embed_files(items)
            if len(indices) < len(items):
                missing = sorted(set(range(len(items))) - set(indices.tolist()))[0]
                raise HHCLError(image_problem(items[missing]) or f"image {items[missing]} cannot be read")
            return features
        batches = (
            (torch.arange(start, min(start + self.batch_size, len(items))),
             torch.stack([self._load(item) for item in items[start : start + self.batch_size]]))
            for start in range(0, len(items), self.batch_size)
        )
        return self._embed_batches(batches, len(items))[1]

    def extract_files(self, paths: Sequence[str | os.PathLike]) -> tuple[list[str], torch.Tensor]:
        """Embed image files, skipping broken ones with a warning that names each.

        Returns the paths kept (in input order) and their ``(M, D)`` float32 L2-normalised features.
        """
        kept, features = self._embed_files(list(paths))
        return [os.fspath(paths[index]) for index in kept.tolist()], features

    def _embed_files(self, paths: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed files through the data layer's test loader, which skips broken ones with a warning.

        Returns the indices embedded, int64 ``(M,)``, and their ``(M, D)`` features.
        """
        from hhcl.data.loaders import build_test_loader

        loader = build_test_loader(
            [os.fspath(path) for path in paths], batch_size=self.batch_size, height=self.height,
            width=self.width, num_workers=self.num_workers,
        )
        return self._embed_batches(((indices, images) for images, indices in loader), len(paths))

    def _embed_batches(self, batches, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed ``(indices (B,), uint8 images (B, 3, height, width))`` batches.

        Returns the indices embedded, int64 ``(M,)`` in order, and their ``(M, D)`` features.
        """
        show = self.progress if self.progress is not None else total >= PROGRESS_MIN_IMAGES
        done_indices, done_features = [], []

        def embed(images: torch.Tensor) -> torch.Tensor:
            return self._embed(normalize_batch(images))

        with self._running():
            for indices, features in embedded_batches(batches, embed, total, show, "extracting features"):
                done_indices.append(indices)
                done_features.append(features)
        if not done_indices:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, self.feature_dim)
        return torch.cat(done_indices), torch.cat(done_features)

    def _embed_normalised_tensor(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 3:
            images = images.unsqueeze(0)
        expected = (3, self.height, self.width)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise HHCLError(
                f"a float tensor batch must be normalised (N, {', '.join(map(str, expected))}), "
                f"got shape {tuple(images.shape)}; pass uint8 images to have them resized"
            )
        with self._running():
            chunks = [self._embed(chunk) for chunk in images.float().split(self.batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.feature_dim)

    def _load(self, item) -> torch.Tensor:
        if isinstance(item, (str, os.PathLike)):
            return load_resized(item, self.height, self.width)
        return resize_image(item, self.height, self.width)

    @contextlib.contextmanager
    def _running(self):
        if self.backend == "onnx":
            yield
            return
        with inference_context(self.model, self.precision, self.device):
            yield

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float32 ``(B, 3, H, W)`` -> ``(B, D)`` float32, L2-normalised, on the CPU."""
        if self.backend == "onnx":
            (features,) = self.session.run(None, {"images": images.numpy()})
            features = torch.from_numpy(features)
        else:
            features = model_outputs(self.model, images, self.precision, self.device)
        # On the CPU for both backends.
        return F.normalize(features.float().cpu(), dim=1)


def resize_image(image: Image.Image | np.ndarray, height: int, width: int) -> torch.Tensor:
    """A PIL image or ``(H, W, 3)`` uint8 array as uint8 ``(3, height, width)``, resized as the data layer does."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise HHCLError(f"an image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        image = Image.fromarray(np.ascontiguousarray(image))
    return resize_to_tensor(image, height, width).contiguous()


def _as_items(images) -> list:
    """Flatten the accepted inputs into a list of single images (paths, PIL images or arrays)."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        return [images]
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise HHCLError(
                "a tensor batch must be uint8 (N, 3, H, W) or normalised float32; "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        batch = images.unsqueeze(0) if images.ndim == 3 else images
        return [image.permute(1, 2, 0).cpu().numpy() for image in batch]
    if isinstance(images, Sequence) or hasattr(images, "__iter__"):
        items = list(images)
        for item in items:
            if not isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)):
                raise HHCLError(f"cannot embed a {type(item).__name__}: give paths, PIL images or uint8 arrays")
        return items
    raise HHCLError(f"cannot embed a {type(images).__name__}: give paths, PIL images, uint8 arrays or a tensor batch")


def resolve_input_size(weights: str | os.PathLike, height: int | None = None,
                       width: int | None = None) -> tuple[int, int]:
    """``(height, width)`` to feed the model of ``weights``: the caller's where given, else the size
    the model was trained at (an hhcl model file records it), else 256x128.

    Features of images resized to another size than the training one are silently worse, so the
    recorded size is the default; an explicit size still wins (e.g. to study that very effect).
    """
    for name, side in (("height", height), ("width", width)):
        if side is not None and side < 1:
            raise HHCLError(f"--{name} {side} is not positive: give an input size of at least 1 pixel, or leave it "
                            f"out to use the size the model was trained at")
    if height is not None and width is not None:
        return height, width
    from hhcl.models.weights import saved_input_size

    recorded = saved_input_size(weights) or DEFAULT_INPUT_SIZE
    return (height if height is not None else recorded[0], width if width is not None else recorded[1])


def load_trained_model(arch: str | None, weights: str | os.PathLike, device: str | torch.device = "cpu",
                       require_complete: bool = True, verbose: bool = False):
    """Build the model ``weights`` were trained as and load every tensor; in eval mode on ``device``.

    An hhcl model file records its architecture and build options (pooling, embedding size, last
    stride): the model is rebuilt with them, since the same tensors under another last stride or
    pooling give other features, and ``arch`` may then be None. Any other file is loaded into
    ``arch`` built by default. A file that leaves part of the model out (or brings tensors it does
    not have) is refused with an :class:`HHCLError`: features from a half-loaded model would be
    silently wrong. ``require_complete=False`` accepts it with the printed load report instead
    (``hhcl evaluate`` of a bare backbone, e.g. ImageNet weights under a fresh re-ID head).
    """
    from hhcl.models import build_model, list_archs, load_weights
    from hhcl.models.weights import saved_build_options

    weights = Path(weights)
    if weights.suffix.lower() == ".onnx":
        raise HHCLError(f"{weights} is an ONNX file: run it with backend 'onnx' (--backend onnx)")
    options = saved_build_options(weights) or {}
    trained_arch = options.pop("arch", None)
    if trained_arch is not None and arch is not None and trained_arch != arch:
        raise HHCLError(
            f"weights {weights} were trained as {trained_arch}, not {arch}: pass --arch {trained_arch} or leave it out"
        )
    arch = arch or trained_arch
    if arch is None:
        raise HHCLError(f"{weights} does not record its architecture: pass --arch, one of {', '.join(list_archs())}")
    model = build_model(arch, **options)
    report = load_weights(model, weights, verbose=verbose)
    incomplete = report.missing or report.unexpected
    if incomplete and require_complete:
        names = ", ".join(incomplete[:3]) + (", ..." if len(incomplete) > 3 else "")
        raise HHCLError(
            f"weights {weights} do not match {arch}: {len(report.missing)} of its tensors are missing and "
            f"{len(report.unexpected)} unexpected ({names}); choose the architecture the file was trained with"
        )
    return model.to(device).eval()
