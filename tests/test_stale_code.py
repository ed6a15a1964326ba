"""Editing a module marks exactly the stages that run it as stale, through the real ``dvc status``.

An edit first makes only ``code_deps`` stale (it depends on the whole package); once it has
rewritten the code files, exactly the stages whose script imports the module are. The expected
sets come from the import closures of the stage scripts (:mod:`tests.stage_deps`), not from a
hand-written list, and are checked against DVC in the reproduced tiny pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dvc_repo import TINY, changed_stages, ran_stages, run
from tests.stage_deps import load_stages, required_sources

pytestmark = pytest.mark.pipeline


def _runs(module: str) -> set[str]:
    stages = load_stages(params=TINY)
    return {name for name, stage in stages.items() if module in required_sources(stage)}


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("src/melanoma_kd/report.py", {"report"}),
        ("src/melanoma_kd/metrics.py", None),  # every stage whose closure holds metrics.py
    ],
)
def test_an_edited_module_makes_exactly_its_stages_stale(
    tiny_repo: Path, module: str, expected: set[str] | None
) -> None:
    runs = _runs(module)
    if expected is not None:
        assert runs == expected
    else:  # the pAUC that picks checkpoints: every trained model and everything scored
        assert {"train_student", "train_teacher@resnet18", "evaluate", "baselines"} <= runs
    path = tiny_repo / module
    original = path.read_bytes()
    assert changed_stages(tiny_repo) == set()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        assert changed_stages(tiny_repo) == {"code_deps"}
        out = run(tiny_repo, "dvc", "repro", "--single-item", "code_deps").stdout
        assert ran_stages(out) == {"code_deps"}
        assert changed_stages(tiny_repo) == runs
    finally:
        path.write_bytes(original)
        run(tiny_repo, "dvc", "repro", "--single-item", "code_deps")
    assert changed_stages(tiny_repo) == set()
