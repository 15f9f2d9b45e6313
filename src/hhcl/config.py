"""Typed configuration with YAML presets.

A preset is a YAML file in ``hhcl/configs/`` (``configs/`` at the repository root links there),
named ``<dataset>_<backbone>.yaml``. A file may name a base file with ``_base_: base.yaml``
(relative to itself); its keys are merged over the base's, section by section. Any key can then
be overridden with ``section.key=value`` strings, the value read as YAML (``eps=0.5``,
``supervised=true``, ``init_weights=null``).

    config = load_config("market1501_resnet50", ["cluster.eps=0.5", "train.epochs=40"])
    config.cluster.eps  # 0.5
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hhcl.errors import HHCLError

PRESET_DIR = Path(__file__).resolve().parent / "configs"
BASE_KEY = "_base_"

MEMORY_MODES = ("centroid", "hard", "hybrid", "hybrid_instance")
LOSS_FORMS = ("paper", "official")
CAMERA_PROXY_SCOPES = ("all", "cross_camera")
PRECISIONS = ("fp32", "bf16", "fp16")  # what hhcl.models.inference runs
PRECISION_CHOICES = ("auto", *PRECISIONS)  # train.precision: hhcl.engine.runtime resolves auto to one of PRECISIONS
EPS_SELECTIONS = ("images", "clusters")  # as hhcl.cluster.reliability ranks eps candidates
OUTLIER_MODES = ("drop", "instances")
KNN_METHODS = ("auto", "exact", "approximate", "matmul", "faiss", "faiss-ivf", "faiss-hnsw")  # hhcl.cluster.knn's search methods


@dataclass
class DatasetConfig:
    """Which images to train and evaluate on, and how they are read."""

    name: str = "market1501"
    root: str | list[str] = "data/market1501"  # several folders (folder reader) pool into one training set
    options: dict = field(default_factory=dict)  # passed to hhcl.data.load_dataset (e.g. synthetic's size)
    height: int = 256
    width: int = 128
    num_workers: int = 4


@dataclass
class ModelConfig:
    """The backbone and its embedding head (hhcl.models.build_model)."""

    arch: str = "resnet50"
    pooling: str = "avg"
    num_features: int = 0
    last_stride: int = 1
    patch_stride: int = 16  # a ViT's patch stride; 12 overlaps its 16x16 patches (TransReID); ViTs only
    # P > 0: P horizontal stripes of the feature map get features of their own (SDFT's parts), after
    # the global one: (1+P)*D features, each piece L2-normalised and the whole unit length. The
    # pseudo-labels are clustered on the global feature; in the loss each stripe has a centroid
    # memory and counts where it agrees with the global pseudo-label (selective contrast:
    # hhcl.memory.PartMemory). CNN backbones only; 0 = off.
    parts: int = 0
    weights: str | None = None  # a local backbone file (e.g. torchvision's ImageNet ResNet-50)
    init_weights: str | None = None  # a whole re-ID checkpoint to start from (load_weights)
    # Keep every BatchNorm's running statistics (those of init_weights) while training: a small
    # target domain's batches would otherwise shift the pretrained features at the first steps.
    freeze_bn: bool = False
    sync_bn: bool = False
    # The evaluated and saved model mixes the starting weights back in, WiSE-FT style:
    # (1 - init_mix) * trained + init_mix * initial (hhcl.models.weights.interpolate_weights).
    # Training itself, and the features clustered each epoch, use the trained weights.
    init_mix: float = 0.0
    # > 0: the trained weights that are evaluated, saved and mixed are an exponential moving
    # average of the optimizer's steps with this decay per step (MMT's mean net; it averages over
    # about 1 / (1 - ema_decay) steps); 0 = the last step's weights.
    ema_decay: float = 0.0


@dataclass
class ClusterConfig:
    """Pseudo-labels: k-reciprocal Jaccard distance, then DBSCAN."""

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    # hhcl.cluster.reliability: eps chosen per epoch among eps_candidates (the one with the most
    # reliable images, or clusters: eps_selection; needs reliability_margin), or as the
    # eps_quantile of the distances to each image's (min_samples - 1)-th neighbour; else eps.
    eps_candidates: list = field(default_factory=list)
    eps_selection: str = "images"
    eps_quantile: float | None = None
    # > 0: keep only images whose cluster survives eps -/+ this margin (IoU >= reliability_threshold).
    reliability_margin: float = 0.0
    reliability_threshold: float = 0.5
    # cluster on features minus each camera's mean (hhcl.cluster.camera); the loss keeps the model's own.
    # A camera's mean is shrunk towards the pool's mean with a prior of camera_prior_images images,
    # so that a camera of one or two images is (almost) not centred on itself.
    camera_centering: bool = False
    camera_prior_images: float = 4.0
    # > 0: dissolve each cluster whose mean pairwise similarity is below this share of its members'
    # mean nearest-neighbour similarity (hhcl.cluster.assign.cluster_compactness): DBSCAN chains
    # different people together through density links where each person has few images.
    min_compactness: float = 0.0
    # Few-shot pools (two images a person) give DBSCAN no core point: two outliers that are each
    # other's nearest neighbour (on the clustering features) become a pseudo-identity of two.
    pair_outliers: bool = False
    # No pseudo-identity spans two sources (roots pooled with --root a b, which share no person):
    # clusters are cut by source, and a lone image left over becomes an outlier.
    separate_sources: bool = False
    # DBSCAN's outliers: "drop" them for the epoch (the paper), or keep each as a one-image
    # pseudo-identity of its own ("instances", as SpCL does): a memory row and a place in the
    # batches (its K draws are augmented copies of the one image), its row updated like a cluster's.
    outliers: str = "drop"
    # The pseudo-labels' kNN search (hhcl.cluster.knn): "exact" (faiss's flat search on the GPU when
    # faiss has GPU support and the features are on CUDA, else hhcl's matmul search), "approximate"
    # (faiss's inverted-file index, for pools of hundreds of thousands of images and more), or "auto":
    # exact below hhcl.cluster.knn.APPROXIMATE_FROM images, approximate from there on when faiss is
    # installed. The run log says which ran, with its parameters. Also by name: "matmul", "faiss"
    # (exact), "faiss-ivf" (= approximate), "faiss-hnsw".
    knn: str = "auto"
    # A multi-granularity clustering ensemble (hhcl.cluster.ensemble, after MGCE-HCL), e.g. [0.5, 0.6, 0.7]:
    # the same features are also clustered at each of these eps (one Jaccard graph for all), and each
    # granularity adds a memory and a loss term of its own, averaged with the main one. Only the images
    # whose labels nest from the finest clustering to the coarsest take part in those terms. The
    # pseudo-labels at eps still drive the sampler, the guard and the main memory. Empty: off.
    ensemble_eps: list = field(default_factory=list)
    # Lists the approximate search probes per image (0: hhcl.cluster.knn.DEFAULT_NPROBE). More lists
    # find more of the true neighbours, in proportionally more time.
    knn_nprobe: int = 0


@dataclass
class GuardConfig:
    """The label-free guard (hhcl.cluster.guard): each epoch, is there enough pseudo-label signal to train on?

    It reads the pool alone, never a test label. An epoch whose pseudo-labels hold too few images,
    too little cross-camera support, or that fall apart when eps moves is not trained on; when no
    epoch has trained, the run keeps the starting model and says so. Features that drift far from
    the starting model's neighbourhoods stop the adaptation where it is.
    """

    enabled: bool = False
    min_clustered_share: float = 0.25  # images in clusters of two or more, over the pool
    min_cross_camera_share: float = 0.2  # clustered images whose cluster spans two cameras (pools with cameras)
    min_eps_stability: float = 0.5  # clustered images whose cluster survives eps -/+ the reliability margin
    max_drift: float = 0.6  # mean share of each image's 10 nearest neighbours no longer among the starting ones
    neighbours: int = 10
    # Judge the last epoch's update too: one more pool extraction and clustering after it, and the
    # update is undone when its features fail. Without it the saved model's own features are never judged.
    check_final: bool = False


@dataclass
class MemoryConfig:
    """The cluster memory and its loss (hhcl.memory)."""

    mode: str = "hybrid"
    temperature: float = 0.05
    momentum: float = 0.1
    hard_weight: float = 0.5
    loss_form: str = "paper"
    # Camera-aware proxies (CAP, Wang et al. AAAI 2021; hhcl.memory.CameraProxyMemory): one row per
    # (pseudo-identity, camera), and a loss added to the memory's: an intra-camera term (each image
    # against the proxies of its own camera) plus half an inter-camera term (towards its identity's
    # proxies in the other cameras, against every proxy of another identity).
    camera_proxies: bool = False
    # Which pseudo-identities get proxies: "all" (CAP), or "cross_camera", only those with images in
    # two cameras or more. Under one camera the intra-camera term only repeats the cluster memory's
    # contrast with fewer negatives, and the inter-camera term has no positive.
    camera_proxy_scope: str = "all"
    part_weight: float = 1.0  # with model.parts: the weight of the stripes' selective loss beside the global one


@dataclass
class OptimConfig:
    """Adam with a step learning-rate schedule, stepped once per epoch."""

    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20
    gamma: float = 0.1


@dataclass
class TrainConfig:
    """The epoch loop."""

    epochs: int = 60
    iters: int = 200
    batch_size: int = 256  # across all ranks under DDP
    num_instances: int = 16
    seed: int = 1
    supervised: bool = False  # train on the ground-truth identities (the paper's upper bound)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "auto"  # auto = AMP bf16 (fp16 without bf16) on CUDA, fp32 on CPU
    channels_last: bool = True  # on CUDA only
    deterministic: bool = True
    num_threads: int = 0  # CPU threads; 0 = auto, one per core idle at the start (the run log says)
    extract_batch_size: int = 128
    # Extract features (the pool each epoch, the evaluation) through torch.compile's inductor: the
    # same features to rounding, faster once compiled, at the price of a compile per model (the
    # trained one, the saved mixture). On CPU it needs a C++ compiler; without one, or if compiling
    # fails, extraction runs eagerly and the run log says why.
    compile: bool = False
    log_every: int = 20


@dataclass
class EvaluationConfig:
    """Evaluation on the query/gallery split, when the dataset has a labelled one."""

    eval_every: int = 10  # epochs; 0 = only after the last epoch
    rerank: bool = False
    select_best: bool = False  # keep the epoch of best test mAP: this uses the test labels


@dataclass
class Config:
    """A whole training configuration. Sections: dataset, model, cluster, memory, optim, train, evaluation."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "Config":
        config = cls()
        _merge_into(config, values, source)
        config.validate(source)
        return config

    def validate(self, source: str = "config", origins: dict[str, str] | None = None) -> None:
        """Raise HHCLError naming the first invalid value and where it came from: ``origins`` maps a
        key to the override that set it (a command-line flag or ``--set``), else ``source`` (the file)."""
        checks = [
            ("memory.mode", self.memory.mode in MEMORY_MODES, f"one of {', '.join(MEMORY_MODES)}"),
            ("memory.loss_form", self.memory.loss_form in LOSS_FORMS, f"one of {', '.join(LOSS_FORMS)}"),
            ("memory.temperature", self.memory.temperature > 0, "a positive number"),
            ("memory.momentum", 0.0 <= self.memory.momentum <= 1.0, "in [0, 1]"),
            ("memory.hard_weight", 0.0 <= self.memory.hard_weight <= 1.0, "in [0, 1]"),
            ("memory.part_weight", self.memory.part_weight >= 0, "a number >= 0"),
            ("memory.camera_proxy_scope", self.memory.camera_proxy_scope in CAMERA_PROXY_SCOPES,
             f"one of {', '.join(CAMERA_PROXY_SCOPES)}"),
            ("train.precision", self.train.precision in PRECISION_CHOICES, f"one of {', '.join(PRECISION_CHOICES)}"),
            ("train.epochs", self.train.epochs >= 1, "at least 1"),
            ("train.iters", self.train.iters >= 1, "at least 1"),
            ("train.num_instances", self.train.num_instances >= 1, "at least 1"),
            ("train.batch_size", self.train.batch_size >= 1, "a positive number of images"),
            ("train.batch_size", self.train.num_instances < 1 or (self.train.batch_size >= self.train.num_instances
                                                                  and self.train.batch_size % self.train.num_instances == 0),
             f"a multiple of train.num_instances ({self.train.num_instances})"),
            ("cluster.eps", 0 < self.cluster.eps < 1, "in (0, 1): Jaccard distances lie in [0, 1]"),
            ("cluster.min_samples", self.cluster.min_samples >= 1, "at least 1"),
            ("cluster.k1", self.cluster.k1 >= 1, "at least 1"),
            ("cluster.k2", self.cluster.k2 >= 1, "at least 1"),
            ("cluster.eps_candidates", all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
                                           for v in self.cluster.eps_candidates), "a list of numbers in (0, 1)"),
            ("cluster.eps_candidates", not self.cluster.eps_candidates or self.cluster.reliability_margin > 0,
             "empty unless cluster.reliability_margin > 0: candidates are ranked by the images that stay reliable"),
            ("cluster.ensemble_eps", all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1
                                         for v in self.cluster.ensemble_eps), "a list of numbers in (0, 1)"),
            ("cluster.ensemble_eps", all(value not in self.cluster.ensemble_eps[:i]
                                         for i, value in enumerate(self.cluster.ensemble_eps)),
             "a list of distinct eps (one granularity each)"),
            ("cluster.eps_selection", self.cluster.eps_selection in EPS_SELECTIONS,
             f"one of {', '.join(EPS_SELECTIONS)}"),
            ("cluster.eps_quantile", self.cluster.eps_quantile is None or 0 < self.cluster.eps_quantile < 1,
             "null or in (0, 1)"),
            ("cluster.reliability_margin", 0 <= self.cluster.reliability_margin < 0.5, "in [0, 0.5)"),
            ("cluster.reliability_threshold", 0 < self.cluster.reliability_threshold <= 1, "in (0, 1]"),
            ("model.init_mix", 0 <= self.model.init_mix < 1, "in [0, 1): the share of the starting weights kept"),
            ("model.ema_decay", 0 <= self.model.ema_decay < 1, "in [0, 1): 0 = off, 0.97 averages about 33 steps"),
            ("model.parts", self.model.parts >= 0, "0 (global feature only) or a number of horizontal stripes"),
            ("cluster.outliers", self.cluster.outliers in OUTLIER_MODES, f"one of {', '.join(OUTLIER_MODES)}"),
            ("cluster.knn", self.cluster.knn in KNN_METHODS, f"one of {', '.join(KNN_METHODS)}"),
            ("cluster.knn_nprobe", self.cluster.knn_nprobe >= 0, "0 (the default) or a positive number of lists"),
            ("cluster.camera_prior_images", self.cluster.camera_prior_images >= 0, "a number >= 0"),
            ("cluster.min_compactness", 0 <= self.cluster.min_compactness < 1, "in [0, 1)"),
            ("guard.min_clustered_share", 0 <= self.guard.min_clustered_share <= 1, "in [0, 1]"),
            ("guard.min_cross_camera_share", 0 <= self.guard.min_cross_camera_share <= 1, "in [0, 1]"),
            ("guard.min_eps_stability", 0 <= self.guard.min_eps_stability <= 1, "in [0, 1]"),
            ("guard.max_drift", 0 < self.guard.max_drift <= 1, "in (0, 1]"),
            ("guard.neighbours", self.guard.neighbours >= 1, "at least 1"),
            ("optim.lr", self.optim.lr > 0, "a positive number"),
            ("optim.step_size", self.optim.step_size >= 1, "at least 1"),
            ("dataset.height", self.dataset.height >= 8, "at least 8"),
            ("dataset.width", self.dataset.width >= 8, "at least 8"),
            ("dataset.num_workers", self.dataset.num_workers >= 0, "0 or more"),
            ("train.num_threads", self.train.num_threads >= 0, "0 (auto: one per idle core) or more"),
            ("evaluation.eval_every", self.evaluation.eval_every >= 0, "0 or more"),
        ]
        for key, ok, expected in checks:
            if not ok:
                where = (origins or {}).get(key, source)
                raise HHCLError(f"{where}: {key} = {self.get(key)!r} is invalid; it must be {expected}")

    def get(self, key: str) -> Any:
        section, name = key.split(".", 1)
        value = getattr(self, section)
        for part in name.split("."):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        return value


def valid_keys() -> list[str]:
    """Every ``section.key`` a config accepts."""
    keys = []
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(_section_type(section.name)):
            keys.append(f"{section.name}.{item.name}")
    return keys


def list_presets() -> list[str]:
    """Names of the shipped presets (without ``.yaml``); ``base`` is a base file, not a preset."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml") if path.stem != "base")


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name (``market1501_resnet50``) or a YAML path to an existing file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        if not candidate.is_file():
            raise HHCLError(f"config file {candidate} not found; give a YAML file or one of: {', '.join(list_presets())}")
        return candidate
    preset = PRESET_DIR / f"{candidate.name}.yaml"
    if preset.is_file():
        return preset
    if candidate.is_file():
        return candidate
    suggestion = _closest(str(name_or_path), list_presets())
    hint = f"did you mean {suggestion!r}? " if suggestion else ""
    raise HHCLError(f"unknown config preset {str(name_or_path)!r}; {hint}presets: {', '.join(list_presets())}")


def load_config(path_or_preset: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a preset or YAML file (with its ``_base_`` chain), then apply ``a.b=c`` overrides.

    ``None`` gives the built-in defaults (the paper's setup on Market-1501 with ResNet-50).
    """
    values: dict = {}
    source = "defaults"
    if path_or_preset is not None:
        path = preset_path(path_or_preset)
        values = _read_with_bases(path, seen=())
        source = str(path)
    config = Config()
    _merge_into(config, values, source)
    overrides = list(overrides)
    apply_overrides(config, overrides)
    origins = {override.split("=", 1)[0].strip(): f"override {override!r}" for override in overrides if "=" in override}
    config.validate(source, origins)
    return config


def apply_overrides(config: Config, overrides: typing.Iterable[str]) -> Config:
    """Set ``section.key=value`` strings on ``config`` in place (value parsed as YAML)."""
    for override in overrides:
        if "=" not in override:
            raise HHCLError(f"override {override!r} must read section.key=value, for example cluster.eps=0.5")
        key, text = override.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        _set_key(config, key, value, source=f"override {override!r}")
    return config


# ---------------------------------------------------------------------------------------------


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        raise HHCLError(f"config file {path} includes itself through {BASE_KEY}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0]
        raise HHCLError(f"config file {path} is not valid YAML: {first_line}") from None
    if not isinstance(values, dict):
        raise HHCLError(f"config file {path} must hold a mapping of sections, not {type(values).__name__}")
    base = values.pop(BASE_KEY, None)
    if base is None:
        return values
    # a file beside this one, else a shipped preset: a user's file can start from `_base_: adapt`
    base_path = path.parent / str(base)
    merged = _read_with_bases(base_path if base_path.is_file() else preset_path(str(base)), seen + (path,))
    return _deep_merge(merged, values)


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge_into(config: Config, values: dict, source: str) -> None:
    for section, items in values.items():
        if not isinstance(items, dict):
            raise HHCLError(f"{source}: section {section!r} must be a mapping of keys, e.g. {section}: {{key: value}}")
        for name, value in items.items():
            _set_key(config, f"{section}.{name}", value, source)


def _section_type(section: str) -> type:
    return typing.get_type_hints(Config)[section]


def _set_key(config: Config, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    section_names = [item.name for item in dataclasses.fields(Config)]
    if len(parts) < 2 or parts[0] not in section_names:
        _unknown_key(key, source)
    section = getattr(config, parts[0])
    hints = typing.get_type_hints(type(section))
    if parts[1] not in hints:
        _unknown_key(key, source)
    expected = hints[parts[1]]
    if len(parts) > 2:
        # a key inside a free-form mapping such as dataset.options.num_identities
        if _origin(expected) is not dict:
            _unknown_key(key, source)
        target = getattr(section, parts[1])
        for part in parts[2:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
        return
    setattr(section, parts[1], _coerce(value, expected, key, source))


def _origin(annotation) -> Any:
    return typing.get_origin(annotation) or annotation


def _coerce(value: Any, expected, key: str, source: str) -> Any:
    allowed = typing.get_args(expected) if _origin(expected) in (typing.Union, types.UnionType) else (expected,)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if type(None) in allowed:
            return None
    kinds = [kind for kind in allowed if kind is not type(None)]
    for kind in kinds:
        converted = _convert(value, kind if _origin(kind) is list else _origin(kind))
        if converted is not _INVALID:
            return converted
    names = " or ".join(getattr(_origin(kind), "__name__", str(kind)) for kind in allowed)
    raise HHCLError(f"{source}: {key} = {value!r} is not a valid {names}")


_INVALID = object()


def _convert(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return _INVALID
    if kind is int:
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                return _INVALID
        return _INVALID
    if kind is float:
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 3.5e-4 as a string
            except ValueError:
                return _INVALID
        return _INVALID
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        return _INVALID
    if kind is dict:
        return dict(value) if isinstance(value, dict) else _INVALID
    if _origin(kind) is list:
        if not isinstance(value, (list, tuple)):
            return _INVALID
        (item_kind,) = typing.get_args(kind) or (None,)
        if item_kind is not None:  # e.g. list[str]: several dataset folders
            items = [_convert(item, item_kind) for item in value]
        else:
            # YAML 1.1 reads 3.5e-4 as a string: numbers inside a list are read as in a float field
            items = [_convert(item, float) if isinstance(item, str) else item for item in value]
        return _INVALID if any(item is _INVALID for item in items) else items
    return _INVALID


def _closest(key: str, candidates: list[str]) -> str | None:
    matches = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    return matches[0] if matches else None


def _unknown_key(key: str, source: str) -> typing.NoReturn:
    keys = valid_keys()
    closest = _closest(key, keys)
    # also try the last part alone: "eps" -> "cluster.eps"
    by_name = [candidate for candidate in keys if candidate.split(".")[-1] == key.split(".")[-1]]
    suggestion = by_name[0] if by_name else closest
    raise HHCLError(f"{source}: unknown config key {key!r}; did you mean {suggestion!r}?")
