"""``melanoma-kd predict`` on folders: recursive image discovery, one error row per bad file,
CSV/JSON output, and the exit status, through the CLI's ``main`` in this process (the installed
console script itself is run by ``tests/test_predict.py``; a new interpreter costs seconds of
imports per call)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from melanoma_kd.cli import main
from melanoma_kd.errors import EXIT_USER_ERROR
from melanoma_kd.predict import Prediction, expand_inputs
from tests.test_predict import _jpeg, model  # noqa: F401  (module-scoped fixture)

N_GOOD = 5


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of lesions: good JPEGs at two depths, one corrupt file, and non-image files."""
    root = tmp_path_factory.mktemp("clinic")
    (root / "visit2" / "left_arm").mkdir(parents=True)
    for i in range(3):
        _jpeg(root / f"lesion{i}.jpg", 50, 60, seed=i)
    for i in range(3, N_GOOD):
        _jpeg(root / "visit2" / "left_arm" / f"lesion{i}.JPG", 64, 48, seed=i)
    good = (root / "lesion0.jpg").read_bytes()
    (root / "visit2" / "broken.jpg").write_bytes(good[: len(good) // 3])
    (root / "notes.txt").write_text("not an image, and not an image extension either\n")
    (root / "empty").mkdir()
    return root


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """``melanoma-kd predict *args``: its exit status and what it printed."""
    capsys.readouterr()
    try:
        code = main(["predict", *args])
    except SystemExit as exc:  # a UserError: one line on stderr, exit status 2
        code = exc.code
    printed = capsys.readouterr()
    return CliResult(int(code or 0), printed.out, printed.err)


def test_folders_expand_recursively_by_extension(clinic: Path) -> None:
    items = expand_inputs([clinic, clinic / "empty", clinic / "lesion1.jpg"])
    paths = [p for p in items if isinstance(p, Path)]
    assert len(paths) == N_GOOD + 1 + 1  # the folder's images incl. the broken one, then the file
    assert paths == [*sorted(paths[:-1]), clinic / "lesion1.jpg"]
    assert all(p.suffix.lower() == ".jpg" for p in paths)
    errors = [p for p in items if isinstance(p, Prediction)]
    assert len(errors) == 1 and "folder holds no image" in (errors[0].error or "")


def test_a_folder_with_one_corrupt_image_via_the_cli(
    clinic: Path,
    model: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _cli(capsys, str(clinic), "--model", str(model), "--format", "csv", "--threads", "1")
    assert out.returncode == EXIT_USER_ERROR, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    scored = [r for r in rows if not r["error"]]
    failed = [r for r in rows if r["error"]]
    assert len(scored) == N_GOOD and len(failed) == 1
    assert failed[0]["image"].endswith("broken.jpg") and failed[0]["p_melanoma"] == ""
    assert "truncated or corrupt image" in failed[0]["error"]
    assert all(0.0 <= float(r["p_melanoma"]) <= 1.0 for r in scored)
    assert out.stderr.count("error: ") == 1


def test_json_to_a_file_and_an_all_good_folder_exits_zero(
    clinic: Path,
    model: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "scores.json"
    out = _cli(
        capsys,
        str(clinic / "visit2" / "left_arm"),
        "--model",
        str(model),
        "--json",
        "--out",
        str(target),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    records = json.loads(target.read_text())
    assert [Path(r["image"]).name for r in records] == ["lesion3.JPG", "lesion4.JPG"]
    assert all("error" not in r for r in records)


def test_an_empty_folder_is_an_error_row_not_file_not_found(
    clinic: Path,
    model: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _cli(capsys, str(clinic / "empty"), "--model", str(model))
    assert out.returncode == EXIT_USER_ERROR
    assert "folder holds no image" in out.stderr and "not found" not in out.stderr
