"""What a training run is (runs.py): one definition of the recipe, objective, params hash and
recorded metadata, used by the training stages, the seed replicates, the transfer ablation and
the benchmarks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from melanoma_kd.catalog import parse_point
from melanoma_kd.config import load_params
from melanoma_kd.errors import UserError
from melanoma_kd.io import sha256_json
from melanoma_kd.points import kd_point
from melanoma_kd.runs import STUDENT_SECTIONS, TEACHER_SECTIONS, student_run, teacher_run

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")


def _hash(sections: tuple[str, ...], **extra: object) -> str:
    """The params hash as documented: the sections' values (``train.nproc`` left out at 1,
    as before it existed) plus the run's own settings, sorted-key JSON, first 16 hex digits."""
    data = {s: getattr(PARAMS, s).model_dump() for s in sections}
    if data["train"]["nproc"] == 1:
        del data["train"]["nproc"]
    return sha256_json({**data, **extra})[:16]


def test_teacher_run() -> None:
    t = PARAMS.teachers
    run = teacher_run(PARAMS, "resnet18")
    schedule = {"arch": "resnet18", "epochs": t.epochs, "lr": t.lr, "size": t.image_size}
    assert run.record == {"role": "teacher", "params_hash": _hash(TEACHER_SECTIONS, **schedule)}
    assert (run.arch, run.epochs, run.lr, run.image_size) == ("resnet18", t.epochs, t.lr, 64)
    assert run.point is None and run.seed is None and not run.uses_transfer


def test_student_runs_main_replicate_and_ablation() -> None:
    """The records, key order included (a checkpoint stores them in this order)."""
    n = PARAMS.distill.transfer_images
    assert n > 0  # the default profile has a transfer set
    point = parse_point("4-0.5-response")
    values = {"alpha": 0.5, "method": "response", "temperature": 4.0}
    feature = parse_point("0.9-feature")
    feature_values = {"alpha": 0.9, "method": "feature"}  # no temperature: none recorded/hashed
    cases = {
        "scratch": (
            student_run(PARAMS),
            {"role": "student", "params_hash": _hash(STUDENT_SECTIONS)},
        ),
        "kd": (
            student_run(PARAMS, point),
            {
                "role": "distilled",
                **values,
                "transfer_images": n,
                "params_hash": _hash(STUDENT_SECTIONS, **values, transfer_images=n),
            },
        ),
        "scratch seed 1": (
            student_run(PARAMS, seed=1),
            {
                "seed": 1,
                "role": "student",
                "params_hash": _hash(STUDENT_SECTIONS, replicate_seed=1),
            },
        ),
        "kd seed 1": (
            student_run(PARAMS, point, seed=1),
            {
                "seed": 1,
                "role": "distilled",
                **values,
                "transfer_images": n,
                "params_hash": _hash(
                    STUDENT_SECTIONS, **values, transfer_images=n, replicate_seed=1
                ),
            },
        ),
        "kd without transfer set": (
            student_run(PARAMS, point, use_transfer=False),
            {
                "role": "distilled",
                **values,
                "transfer_images": 0,
                "params_hash": _hash(STUDENT_SECTIONS, **values),
            },
        ),
        "feature kd": (
            student_run(PARAMS, feature),
            {
                "role": "distilled",
                **feature_values,
                "transfer_images": n,
                "params_hash": _hash(STUDENT_SECTIONS, **feature_values, transfer_images=n),
            },
        ),
    }
    for name, (run, record) in cases.items():
        assert list(run.record.items()) == list(record.items()), name
    runs = {name: run for name, (run, _) in cases.items()}
    assert [r.uses_transfer for r in runs.values()] == [False, True, False, True, False, True]
    assert [r.seed for r in runs.values()] == [None, None, 1, 1, None, None]
    assert runs["kd"].point == point and runs["scratch"].point is None
    # the main seed is the main run, not a replicate of it
    assert student_run(PARAMS, point, seed=PARAMS.train.seed) == runs["kd"]


def test_without_a_transfer_set_the_ablation_hash_is_the_main_runs() -> None:
    params = PARAMS.model_copy(
        update={"distill": PARAMS.distill.model_copy(update={"transfer_images": 0})}
    )
    point = parse_point("0.9-feature")
    main, ablation = student_run(params, point), student_run(params, point, use_transfer=False)
    assert main.params_hash == ablation.params_hash and not main.uses_transfer
    assert "transfer_images" not in main.record and ablation.record["transfer_images"] == 0


def test_kd_point_from_values() -> None:
    assert kd_point(4.0, 0.5, "response") == parse_point("4-0.5-response")
    assert kd_point(None, 0.9, "feature") == parse_point("0.9-feature")
    assert kd_point(None, 0.9, "feature").key == "0.9-feature"
    assert kd_point(4, 0.5, "response").label == "KD response, T=4, α=0.5"
    assert kd_point(None, 0.9, "feature").label == "KD feature, α=0.9"
    with pytest.raises(UserError, match=r"^distill: unknown KD method 'magic'"):
        kd_point(1.0, 0.5, "magic")
    with pytest.raises(UserError, match=r"^distill: feature KD takes no temperature"):
        kd_point(2, 0.9, "feature")
    with pytest.raises(UserError, match=r"^distill: response KD needs a temperature"):
        kd_point(None, 0.9, "response")
    for t, a in ((1.0, 1.5), (0.0, 0.5), (float("inf"), 0.5)):
        with pytest.raises(UserError, match=r"^distill: need 0 <= alpha <= 1 and temperature > 0"):
            kd_point(t, a, "response")
    with pytest.raises(UserError, match=r"^distill: need 0 <= alpha <= 1"):
        kd_point(None, -0.1, "feature")


def test_run_identity_is_built_only_in_runs_py() -> None:
    """No stage, benchmark or package module hashes params or calls the training driver itself."""
    offenders = []
    for path in sorted([*ROOT.glob("stages/*.py"), *ROOT.glob("benchmarks/*.py")]):
        if re.search(r"\b(params_hash|run_training|transfer_meta)\(", path.read_text()):
            offenders.append(path.relative_to(ROOT).as_posix())
    for path in sorted((ROOT / "src/melanoma_kd").rglob("*.py")):
        if path.name != "runs.py" and re.search(
            r"\b(params_hash|run_training)\(", path.read_text()
        ):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
