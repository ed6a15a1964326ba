"""README.md's results block is generated from reports/summary.md, never typed."""

from __future__ import annotations

import pytest

from melanoma_kd.errors import UserError
from melanoma_kd.readme_results import END, START, results_block, update_readme
from tests.conftest import REPO_ROOT

SUMMARY = """# title

## Every model on holdout

| model | ROC-AUC |
|---|---:|
| `a` | 0.9000 |

## KD gain over the scratch student

- ΔROC-AUC = +0.0100 (95 % CI -0.0100..+0.0300), p = 0.300

## KD ablation (validation split)

| T | α |
"""


def test_block_holds_the_generated_sections_only() -> None:
    block = results_block(SUMMARY)
    assert block.startswith(START) and block.endswith(END)
    assert "| `a` | 0.9000 |" in block and "p = 0.300" in block
    assert "KD ablation" not in block


def test_update_replaces_only_the_block() -> None:
    readme = f"intro\n\n{START}\nold numbers 0.5\n{END}\n\nmore text\n"
    updated = update_readme(readme, SUMMARY)
    assert updated.startswith("intro\n\n") and updated.endswith("\n\nmore text\n")
    assert "old numbers" not in updated and "0.9000" in updated
    assert update_readme(updated, SUMMARY) == updated


@pytest.mark.parametrize(
    "readme",
    ["no markers", f"{END}\n{START}", f"{START}\n{END}\n{START}\n{END}"],
)
def test_bad_markers_fail_in_one_line(readme: str) -> None:
    with pytest.raises(UserError, match=r"README\.md"):
        update_readme(readme, SUMMARY)


def test_missing_section_names_it() -> None:
    with pytest.raises(UserError, match="KD gain"):
        results_block("## Every model on holdout\n\n| a |\n")


def test_committed_readme_matches_committed_summary() -> None:
    summary = REPO_ROOT / "reports" / "summary.md"
    if not summary.is_file():
        pytest.skip("reports/summary.md is not committed yet")
    readme = (REPO_ROOT / "README.md").read_text()
    assert update_readme(readme, summary.read_text()) == readme, "run `make repro` and commit"
