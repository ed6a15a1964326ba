"""Typed pipeline parameters (``params.yaml``).

Every stage validates the whole file through :func:`load_params`, so a typo'd key, a wrong type
or an out-of-range value anywhere fails at once with one line naming the key and the problem.
Each stage then reads only its own sections, and ``dvc.yaml`` lists exactly those dotted keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from melanoma_kd.errors import UserError

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
ImageSize = Annotated[int, Field(ge=16, le=1024)]


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


class DataParams(Section):
    """Which data set feeds the pipeline and how bad images are handled."""

    source: Literal["synthetic", "isic2024", "ham10000"] = "synthetic"
    root: str = "data/raw/synthetic"
    image_dirs: list[str] = Field(
        default_factory=lambda: ["HAM10000_images_part_1", "HAM10000_images_part_2"]
    )
    on_bad_image: Literal["fail", "skip"] = "fail"
    # Patient-grouped negative subsampling at ingest (data/split.py): keep every melanoma image
    # and whole patients, at most this many benign images; None = keep everything.
    max_negatives: PositiveInt | None = None
    subsample_seed: NonNegInt = 0


class GenerateParams(Section):
    """Synthetic dermoscopy generator (the built-in default data set)."""

    n_images: Annotated[int, Field(ge=20)] = 1500
    positive_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.30
    image_size: ImageSize = 128
    max_lesions_per_patient: PositiveInt = 3
    max_images_per_lesion: PositiveInt = 3
    hair_fraction: Fraction = 0.3
    hair_thin: Fraction = 0.15  # shares of the hairy images per hair type (the rest: dark)
    hair_grey: Fraction = 0.15
    hair_blond: Fraction = 0.15
    ruler_fraction: Fraction = 0.1  # images with a ruler's ink marks (removed like hair)
    bubble_fraction: Fraction = 0.1  # images with air bubbles (not hair: left in place)
    label_noise: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.02
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 92
    seed: NonNegInt = 0

    @model_validator(mode="after")
    def _hair_shares_fit(self) -> GenerateParams:
        if self.hair_thin + self.hair_grey + self.hair_blond > 1 + 1e-9:
            raise ValueError("hair_thin + hair_grey + hair_blond must be <= 1")
        return self


class SplitParams(Section):
    """Patient-grouped, label-stratified train/val/holdout split."""

    train: Fraction = 0.50
    val: Fraction = 0.25
    holdout: Fraction = 0.25
    seed: NonNegInt = 0

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.holdout
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + holdout must sum to 1 (got {total:g})")
        if min(self.train, self.val, self.holdout) <= 0:
            raise ValueError("every split fraction must be > 0")
        return self


class ShapeDetectorParams(Section):
    """The ``shape`` hair detector (``melanoma_kd.data.hair``): black-hat, an oriented line
    filter with hysteresis, a pixel threshold relative to the local ridge, and component shape;
    the same filters on a colour residual find hairs lighter than what they cross (``colour_*``),
    and on line-averaged chroma residuals faint blond and grey hair (``yellow_*``, ``grey_*``).
    Defaults chosen on train images only (``python -m melanoma_kd.data.hair_tuning``)."""

    blackhat_kernel: Annotated[int, Field(ge=3, le=51)] = 7
    threshold: Annotated[int, Field(ge=1, le=255)] = 10  # black-hat grey levels
    line_length: Annotated[int, Field(ge=3, le=51)] = 13  # px, odd
    line_angles: Annotated[int, Field(ge=2, le=64)] = 24
    line_threshold: Annotated[float, Field(gt=0.0)] = 12.0  # line response that seeds a hair
    line_threshold_low: Annotated[float, Field(gt=0.0)] = 6.0  # ... that extends one
    line_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.35  # seed: line / local ridge max
    relative_threshold: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25  # of the local ridge max
    min_length: NonNegInt = 12  # px, longest bounding-box side of a kept component
    long_length: PositiveInt = 30  # px; components this long are hair whatever their shape
    min_elongation: Annotated[float, Field(ge=1.0)] = 4.0  # sqrt of the moments' eigen-ratio
    max_hole: NonNegInt = 3  # px enclosed by a short component (rings, network cells)
    mesh_cell: PositiveInt = 40  # px: holes up to this size are network cells ...
    max_cells: NonNegInt = 6  # ... and a component with more of them is network
    colour_gain: Annotated[float, Field(ge=0.0)] = 5.5  # colour branch (light hair); 0 = off
    colour_median: Annotated[int, Field(ge=3, le=31)] = 7  # px, odd: its median window
    colour_threshold: Annotated[float, Field(gt=0.0)] = 18.0  # its ridge's step-1 threshold
    colour_relative_threshold: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25  # its step 3
    yellow_gain: Annotated[float, Field(ge=0.0)] = 6.0  # yellow branch (blond on skin); 0 = off
    yellow_threshold: Annotated[float, Field(gt=0.0)] = 12.0  # its step-1 threshold
    yellow_relative_threshold: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.4  # its step 3
    grey_gain: Annotated[float, Field(ge=0.0)] = 6.0  # grey branch (faint grey hair); 0 = off
    grey_threshold: Annotated[float, Field(gt=0.0)] = 12.0  # its step-1 threshold
    grey_relative_threshold: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.4  # its step 3
    colour_veto: NonNegInt = 4  # px: light-branch pixels this near dark structure go; 0 = off
    colour_veto_blackhat: Annotated[float, Field(ge=0.0)] = 50.0  # black-hat of a vetoing pixel
    dilate: NonNegInt = 0

    @model_validator(mode="after")
    def _consistent(self) -> ShapeDetectorParams:
        if self.line_length % 2 == 0:
            raise ValueError("shape.line_length must be odd")
        if self.colour_median % 2 == 0:
            raise ValueError("shape.colour_median must be odd")
        if self.line_threshold_low > self.line_threshold:
            raise ValueError("shape.line_threshold_low must be <= shape.line_threshold")
        return self


class PreprocessParams(Section):
    """Hair removal: a hair detector, then Telea inpainting of its mask.

    ``detector: reference`` is the published black-hat → threshold → drop short → dilate
    pipeline (the flat keys below); ``shape`` rejects non-hair detections (``shape`` section).
    """

    hair_removal: bool = True
    detector: Literal["reference", "shape"] = "shape"
    blackhat_kernel: Annotated[int, Field(ge=3, le=51)] = 9
    kernel_shape: Literal["ellipse", "cross", "rect"] = "ellipse"
    threshold: Annotated[int, Field(ge=1, le=255)] = 30
    min_hair_length: NonNegInt = 12  # px; shorter detections (dots, network) are not hair
    dilate: NonNegInt = 1
    inpaint_radius: Annotated[int, Field(ge=1, le=20)] = 3
    workers: NonNegInt = 0  # 0 = all cores
    chunk_size: PositiveInt = 32
    shape: ShapeDetectorParams = Field(default_factory=ShapeDetectorParams)


class CacheParams(Section):
    """HDF5 training cache: shorter-side resize then centre crop to ``size``."""

    size: ImageSize = 64


class AugmentParams(Section):
    """Training augmentation; a view is a pure function of (seed, epoch, index)."""

    hflip: Fraction = 0.5
    rotation: Annotated[float, Field(ge=0.0, le=180.0)] = 30.0
    scale_min: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    scale_max: Annotated[float, Field(ge=1.0, le=4.0)] = 1.2
    brightness: Fraction = 0.2
    contrast: Fraction = 0.2
    saturation: Fraction = 0.2
    hue: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0


class TrainParams(Section):
    """The recipe shared by teachers, the scratch student and every distilled student."""

    seed: NonNegInt = 0
    batch_size: PositiveInt = 32
    optimizer: Literal["adam", "adamw"] = "adamw"
    weight_decay: Annotated[float, Field(ge=0.0)] = 1e-4
    loss: Literal["ce", "weighted_ce", "focal"] = "weighted_ce"
    focal_alpha: Fraction = 0.75
    focal_gamma: Annotated[float, Field(ge=0.0, le=10.0)] = 2.0
    balanced_sampler: bool = False
    # cosine: linear warmup for warmup_epochs, cosine decay to zero per step, the FINAL weights
    #   are the run's checkpoint (no picking on validation).
    # plateau: ReduceLROnPlateau + early stopping on validation pAUC, the best epoch's weights.
    schedule: Literal["cosine", "plateau"] = "cosine"
    warmup_epochs: NonNegInt = 1
    patience: PositiveInt = 5  # plateau only
    lr_patience: NonNegInt = 2  # plateau only
    lr_factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5  # plateau only
    num_threads: PositiveInt = 2
    nproc: PositiveInt = 1  # training processes (DDP under torchrun when > 1)
    num_workers: NonNegInt = 0
    synthetic_positives: bool = False
    # CUDA only (no-ops on CPU, which always trains in float32; see train.device_path):
    amp: Literal["bf16", "off"] = "bf16"  # bf16 autocast of the training step
    channels_last: bool = True  # channels-last memory format for model weights and input

    @model_validator(mode="after")
    def _imbalance_corrected_once(self) -> TrainParams:
        if self.balanced_sampler and self.loss != "ce":
            raise ValueError(
                f"balanced_sampler=true with loss={self.loss!r} corrects class imbalance twice; "
                "use loss: ce with the sampler, or a weighted/focal loss without it"
            )
        return self


class ReplicatesParams(Section):
    """Seed replicates: scratch and selected KD student retrained per seed (a DVC foreach).

    Its own section, not part of ``train``: editing the list must not rerun every training stage.
    """

    seeds: Annotated[list[NonNegInt], Field(min_length=1)] = Field(
        default_factory=lambda: [1, 2, 3, 4]
    )
    # the best teacher retrained per seed (teacher_replicate; the hair-removal ablation pools
    # over them); [] = none
    teacher_seeds: list[NonNegInt] = Field(default_factory=lambda: [1, 2])

    @field_validator("seeds", "teacher_seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("must be distinct")
        return seeds


HairArm = Literal["none", "reference", "shape"]


class HairAblationParams(Section):
    """Hair removal's effect on the classifier: the scratch student and the best teacher
    retrained, per seed, on images preprocessed another way (``arms``: ``none`` = no hair
    removal, or the other detector) and compared, paired on the same holdout images and pooled
    over ``seeds``, with the main pipeline's preprocessing (``melanoma_kd.hair_ablation``)."""

    arms: list[HairArm] = Field(default_factory=lambda: ["none", "reference"])  # [] = off
    seeds: Annotated[list[NonNegInt], Field(min_length=1)] = Field(
        default_factory=lambda: [0, 1, 2]
    )

    @field_validator("arms", "seeds")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        if len(set(values)) != len(values):
            raise ValueError("must be distinct")
        return values


class ModelsParams(Section):
    """Where optional local pretrained weights live (never downloaded)."""

    weights_dir: str = "models/pretrained"


class TeachersParams(Section):
    """Teacher architectures (a DVC foreach) and their schedule."""

    archs: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["resnet18", "resnet10t"]
    )
    image_size: ImageSize = 64
    epochs: PositiveInt = 6
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3


class StudentParams(Section):
    """The small student (scratch baseline and KD runs share it)."""

    arch: str = "mobilenetv3_small_100"
    image_size: ImageSize = 64
    epochs: PositiveInt = 12
    lr: Annotated[float, Field(gt=0.0, le=1.0)] = 2e-3


Temperature = Annotated[float, Field(gt=0.0, le=100.0)]


class ResponseGrid(Section):
    """Response KD, ``KD = T^2 * KL(p_teacher^T || p_student^T)``: the grid is T x alpha."""

    temperature: list[Temperature] = Field(default_factory=lambda: [1.0, 4.0])
    alpha: list[Fraction] = Field(default_factory=lambda: [0.5, 0.9])


class FeatureGrid(Section):
    """Feature KD, ``KD = MSE`` of adapted pooled stage features: no temperature, so the grid
    is alpha only (``alpha: []`` turns it off)."""

    alpha: list[Fraction] = Field(default_factory=lambda: [0.5, 0.9])
    stages: Annotated[int, Field(ge=1, le=4)] = 2  # last N stages of student and teacher


class DistillParams(Section):
    """Knowledge distillation grid: response KD over T x alpha, feature KD over alpha.

    Convention: ``alpha`` weighs the distillation term, ``loss = (1-alpha)*CE + alpha*KD``.
    """

    teacher: str = "best"
    response: ResponseGrid = Field(default_factory=ResponseGrid)
    feature: FeatureGrid = Field(default_factory=FeatureGrid)
    # Transfer set: unlabelled images the student sees with the distillation term only.
    transfer_images: NonNegInt = 200  # 0 = off
    transfer_seed: NonNegInt = 1  # synthetic data: the generator seed of the extra draw
    transfer_dir: str | None = None  # real data: a folder of unlabelled images (never val/holdout)

    @model_validator(mode="after")
    def _one_point_at_least(self) -> DistillParams:
        for name, axis in (
            ("response.temperature", self.response.temperature),
            ("response.alpha", self.response.alpha),
            ("feature.alpha", self.feature.alpha),
        ):
            if len(set(axis)) != len(axis):
                raise ValueError(f"{name}: values must be distinct (a point would train twice)")
        n_response = len(self.response.temperature) * len(self.response.alpha)
        if n_response + len(self.feature.alpha) == 0:
            raise ValueError(
                "the KD grid is empty: give response.temperature x alpha or feature.alpha"
            )
        return self


class ExportParams(Section):
    """ONNX export and its parity check against PyTorch."""

    opset: Annotated[int, Field(ge=13, le=23)] = 17
    atol: Annotated[float, Field(gt=0.0)] = 1e-4


class QuantizeParams(Section):
    """ONNX Runtime static QDQ INT8 quantization."""

    calibration_size: PositiveInt = 128
    method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    per_channel: bool = True
    reduce_range: bool = True  # 7-bit weights: no u8·s8 saturation on CPUs without VNNI


class BenchmarkParams(Section):
    """Latency measurement."""

    warmup: NonNegInt = 5
    runs: Annotated[int, Field(ge=10)] = 50
    deploy_size: ImageSize = 224
    threads: Annotated[list[PositiveInt], Field(min_length=1)] = [1, 2]  # intra-op, each timed


class EvaluateParams(Section):
    """Holdout evaluation."""

    sens_target: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    ece_bins: Annotated[int, Field(ge=2, le=100)] = 15
    n_boot: Annotated[int, Field(ge=100)] = 1000
    seed: NonNegInt = 0


class SynthParams(Section):
    """Generated positives (``synth_positives``) and their VGG16 filter (``perceptual_filter``).

    Band (filter): with ``R`` the real-to-real nearest-neighbour distances of the train
    positives, a candidate at distance ``d`` from its nearest real train positive is kept iff
    ``low_factor * Q_R(low_quantile) <= d <= high_factor * Q_R(high_quantile)``; below is a
    near-duplicate, above is unrealistic.
    """

    # synth_positives
    ratio: Annotated[float, Field(ge=0.0, le=50.0)] = 1.0  # candidates per real train positive
    seed: NonNegInt = 0
    scale_min: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    scale_max: Annotated[float, Field(ge=1.0, le=2.0)] = 1.2
    elastic_alpha: Annotated[float, Field(ge=0.0, le=0.2)] = 0.03  # max shift / patch side
    elastic_sigma: Annotated[float, Field(gt=0.0, le=0.5)] = 0.08  # smoothing / patch side
    color: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1  # gains 1±color, hue ±30°·color
    mask_dilate: Annotated[float, Field(ge=0.0, le=0.2)] = 0.04  # / shorter side (min 8 px)
    # perceptual_filter
    image_size: Annotated[int, Field(ge=32, le=512)] = 64  # VGG16 input side
    batch_size: PositiveInt = 32
    num_threads: PositiveInt = 2
    low_quantile: Fraction = 0.05
    low_factor: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0
    high_quantile: Fraction = 0.95
    high_factor: Annotated[float, Field(ge=0.0, le=10.0)] = 1.5

    @model_validator(mode="after")
    def _ordered(self) -> SynthParams:
        if self.low_quantile > self.high_quantile:
            raise ValueError("low_quantile must be <= high_quantile")
        if self.low_factor > self.high_factor:
            raise ValueError("low_factor must be <= high_factor")
        return self


class PredictParams(Section):
    """The ``melanoma-kd predict`` CLI."""

    max_pixels: PositiveInt = 40_000_000


class Params(Section):
    """The whole ``params.yaml``."""

    data: DataParams = Field(default_factory=DataParams)
    generate: GenerateParams = Field(default_factory=GenerateParams)
    split: SplitParams = Field(default_factory=SplitParams)
    preprocess: PreprocessParams = Field(default_factory=PreprocessParams)
    cache: CacheParams = Field(default_factory=CacheParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    train: TrainParams = Field(default_factory=TrainParams)
    replicates: ReplicatesParams = Field(default_factory=ReplicatesParams)
    models: ModelsParams = Field(default_factory=ModelsParams)
    teachers: TeachersParams = Field(default_factory=TeachersParams)
    student: StudentParams = Field(default_factory=StudentParams)
    distill: DistillParams = Field(default_factory=DistillParams)
    export: ExportParams = Field(default_factory=ExportParams)
    quantize: QuantizeParams = Field(default_factory=QuantizeParams)
    benchmark: BenchmarkParams = Field(default_factory=BenchmarkParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    predict: PredictParams = Field(default_factory=PredictParams)
    synth: SynthParams = Field(default_factory=SynthParams)
    hair_ablation: HairAblationParams = Field(default_factory=HairAblationParams)

    @model_validator(mode="after")
    def _cache_serves_every_model(self) -> Params:
        largest = max(self.teachers.image_size, self.student.image_size)
        if self.cache.size < largest:
            raise ValueError(
                f"cache.size ({self.cache.size}) must be >= every model input size ({largest})"
            )
        return self

    @model_validator(mode="after")
    def _transfer_set_is_well_defined(self) -> Params:
        d = self.distill
        if d.transfer_images == 0:
            return self
        if self.train.balanced_sampler:
            raise ValueError(
                "distill.transfer_images: a transfer set needs a plain shuffle; "
                "train.balanced_sampler draws labelled images only"
            )
        if d.transfer_dir is None and self.data.source != "synthetic":
            raise ValueError(
                f"distill.transfer_dir: data.source {self.data.source!r} needs a folder of "
                "unlabelled images for the transfer set (or distill.transfer_images: 0)"
            )
        if d.transfer_dir is None and d.transfer_seed == self.generate.seed:
            raise ValueError(
                f"distill.transfer_seed ({d.transfer_seed}) equals generate.seed: the transfer "
                "draw would repeat the labelled images"
            )
        return self

    @model_validator(mode="after")
    def _replicates_are_not_the_main_run(self) -> Params:
        for key in ("seeds", "teacher_seeds"):
            if self.train.seed in getattr(self.replicates, key):
                raise ValueError(
                    f"replicates.{key} must not contain train.seed ({self.train.seed}); "
                    "the main runs already use it"
                )
        return self

    @model_validator(mode="after")
    def _hair_ablation_has_its_comparators(self) -> Params:
        h = self.hair_ablation
        if not h.arms:
            return self
        main = self.preprocess.detector if self.preprocess.hair_removal else "none"
        if main in h.arms:
            raise ValueError(
                f"hair_ablation.arms must not contain {main!r}: that is the main pipeline's "
                "preprocessing (preprocess.hair_removal / preprocess.detector), always compared; "
                "list only the others"
            )
        if self.train.synthetic_positives:
            raise ValueError(
                "hair_ablation.arms: the ablation trains on the labelled images only; it needs "
                "train.synthetic_positives: false (or hair_ablation.arms: [])"
            )
        for key, what in (("seeds", "scratch student"), ("teacher_seeds", "best teacher")):
            have = {self.train.seed, *getattr(self.replicates, key)}
            if lacking := sorted(set(h.seeds) - have):
                raise ValueError(
                    f"hair_ablation.seeds {lacking}: the main pipeline's {what} is trained "
                    f"only at train.seed and replicates.{key} ({sorted(have)})"
                )
        return self


def _format_error(path: str | Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    got = err.get("input")
    shown = "" if isinstance(got, dict) or err["type"] == "extra_forbidden" else f" (got {got!r})"
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    where = f"{loc}: " if loc else ""
    return f"{path}: {where}{msg}{shown}{more}"


def parse_params(raw: object, source: str | Path = "params.yaml") -> Params:
    """Validate a parsed YAML mapping; raise :class:`UserError` with one line on failure."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: top level must be a mapping of sections")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_error(source, exc)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(raw, path)
