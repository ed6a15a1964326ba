"""Every shipped params profile validates, and names architectures timm knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoma_kd.config import load_params
from melanoma_kd.models.build import check_arch

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [
    ROOT / "params.yaml",
    ROOT / "tests/profiles/tiny.yaml",
    *sorted(ROOT.glob("configs/*.yaml")),
]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_validates_and_archs_exist(path: Path) -> None:
    params = load_params(path)
    for arch in [*params.teachers.archs, params.student.arch]:
        check_arch(arch)


def test_published_recipes_are_encoded() -> None:
    isic = load_params(ROOT / "configs/isic2024.yaml")
    assert (isic.teachers.image_size, isic.student.image_size, isic.cache.size) == (256, 224, 256)
    assert isic.distill.temperature == [4.0] and isic.distill.alpha == [pytest.approx(0.4)]
    assert isic.train.loss == "weighted_ce" and not isic.train.balanced_sampler
    ham = load_params(ROOT / "configs/ham10000.yaml")
    assert ham.train.loss == "focal" and not ham.train.balanced_sampler
    assert ham.distill.temperature == [1.0, 2.0] and ham.distill.alpha == [0.5, 0.9]
    assert len(ham.teachers.archs) == 13
