"""The hair-removal ablation: what hair removal does to the classifier.

The main pipeline preprocesses every image one way (``preprocess.hair_removal`` and
``preprocess.detector``: its *main arm*). Each other arm in ``hair_ablation.arms`` — ``none`` (no
hair removal), ``reference`` (the published black-hat detector) or ``shape`` — gets its own
image cache (``hair_cache@<arm>``, :mod:`melanoma_kd.data.arm_cache`: the same manifest and
splits, preprocessed that way) on which
the scratch student (``hair_student@<arm>-<seed>``) and the best teacher
(``hair_teacher@<arm>-<seed>``) are retrained at each of ``hair_ablation.seeds``. Only the images
differ from the main arm's runs: recipe, seeds and augmented views are the same.

The main arm is not retrained: its runs are the pipeline's own — the scratch student at
``train.seed`` and its seed replicates (``replicate@<seed>``), the best teacher at
``train.seed`` and its seed replicates (``teacher_replicate@<seed>``).

:func:`melanoma_kd.hair_effect.compare_arms` scores every run on its own arm's holdout images
(the same image ids in the same order) and compares each pair of arms per role, paired on those
images and pooled over the seeds (:func:`melanoma_kd.seed_stats.pooled_paired_delta`). "Best
teacher" is the teacher best on validation in the main pipeline, as the select_teacher stage
recorded it (:func:`melanoma_kd.selection.read_best_teacher`): the teacher the evaluation
compares against; every arm retrains that architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from melanoma_kd.config import HairArm, Params, PreprocessParams
from melanoma_kd.errors import UserError

Role = Literal["student", "teacher"]
ROLES: tuple[Role, ...] = ("student", "teacher")


def main_arm(params: Params) -> str:
    """The main pipeline's preprocessing: ``none`` or its detector."""
    return params.preprocess.detector if params.preprocess.hair_removal else "none"


def arm_preprocess(params: Params, arm: HairArm) -> PreprocessParams:
    """``preprocess`` with the arm's hair removal: off for ``none``, else that detector.

    ``arm`` is an item of ``hair_ablation.arms`` (:func:`checked_arm`), which the config
    validates against :data:`melanoma_kd.config.HairArm`."""
    if arm == "none":
        return params.preprocess.model_copy(update={"hair_removal": False})
    return params.preprocess.model_copy(update={"hair_removal": True, "detector": arm})


def checked_arm(params: Params, arm: str) -> HairArm:
    """``arm`` if it is one of ``hair_ablation.arms`` (a stage item), else one clear error."""
    for known in params.hair_ablation.arms:
        if known == arm:
            return known
    raise UserError(
        f"hair_ablation: arm {arm!r} is not in hair_ablation.arms {params.hair_ablation.arms}"
    )


@dataclass(frozen=True)
class ArmRun:
    """One run of the ablation: a role at one seed in one arm, its checkpoint and the cache
    holding the images of its arm."""

    arm: str
    role: Role
    seed: int
    checkpoint: Path
    cache_dir: Path

    @property
    def name(self) -> str:
        return f"{self.role}_{self.arm}_seed{self.seed}"


def arm_runs(
    params: Params,
    teacher_arch: str,
    *,
    models: Path = Path("models"),
    main_cache: Path = Path("data/cache"),
    arm_caches: Path = Path("data/hair_ablation"),
) -> list[ArmRun]:
    """Every run the comparison reads, main arm first; the layout of ``dvc.yaml``'s stages."""
    main, base = main_arm(params), params.train.seed
    runs = []
    for seed in params.hair_ablation.seeds:
        student = (
            models / "student" / "scratch.pt"
            if seed == base
            else models / "replicates" / str(seed) / "scratch.pt"
        )
        teacher = (
            models / "teachers" / f"{teacher_arch}.pt"
            if seed == base
            else models / "teacher_replicates" / f"{seed}.pt"
        )
        runs += [
            ArmRun(main, "student", seed, student, main_cache),
            ArmRun(main, "teacher", seed, teacher, main_cache),
        ]
    for arm in params.hair_ablation.arms:
        for seed in params.hair_ablation.seeds:
            runs += [
                ArmRun(
                    arm,
                    role,
                    seed,
                    models / "hair_ablation" / arm / str(seed) / f"{role}.pt",
                    arm_caches / arm,
                )
                for role in ROLES
            ]
    return runs
