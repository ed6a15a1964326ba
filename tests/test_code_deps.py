"""The code files that stand for each stage's code in dvc.lock (melanoma_kd/code_deps.py): what
they hold, that an edit changes exactly the ones whose script runs the edited module, and that
the committed ones are what the code_deps stage writes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from melanoma_kd.code_deps import fingerprint, import_closure, write_code_files
from tests.dvc_repo import ROOT


def _project(tmp_path: Path) -> Path:
    """A copy of the stage scripts and the package, as the code_deps stage sees them."""
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "stages", root / "stages", ignore=ignore)
    shutil.copytree(ROOT / "src" / "melanoma_kd", root / "src" / "melanoma_kd", ignore=ignore)
    return root


def _write(root: Path) -> dict[str, str]:
    write_code_files(root / "stages", root / "src", root / "code", root)
    return {p.name: p.read_text() for p in sorted((root / "code").iterdir())}


def test_a_code_file_lists_the_script_then_its_closure_with_their_hashes(tmp_path: Path) -> None:
    root = _project(tmp_path)
    script = root / "stages" / "select_teacher.py"
    lines = fingerprint(script, root / "src", root).splitlines()
    assert lines[0].startswith("# ") and "stages/select_teacher.py" in lines[0]
    entries = [line.split("  ") for line in lines[1:]]
    paths = [path for _, path in entries]
    closure = sorted(p.relative_to(root).as_posix() for p in import_closure(script, root / "src"))
    assert paths == ["stages/select_teacher.py", *closure]
    assert "src/melanoma_kd/selection.py" in closure and "src/melanoma_kd/train.py" not in closure
    for digest, path in entries:
        assert digest == hashlib.sha256((root / path).read_bytes()).hexdigest(), path


def test_an_edit_changes_exactly_the_code_files_of_scripts_that_import_it(tmp_path: Path) -> None:
    root = _project(tmp_path)
    before = _write(root)
    assert set(before) == {f"{p.stem}.txt" for p in (root / "stages").glob("*.py")}
    src = root / "src"
    for module in ("melanoma_kd/selection.py", "melanoma_kd/report.py"):
        path = src / module
        users = {
            f"{s.stem}.txt"
            for s in (root / "stages").glob("*.py")
            if path.resolve() in import_closure(s, src)
        }
        assert users and users != set(before)
        path.write_text(path.read_text() + "\n# an edit\n")
        after = _write(root)
        assert {name for name in before if after[name] != before[name]} == users, module
        before = after
    # a byte-compiled cache or a stray file beside the modules is not code a stage runs
    (src / "melanoma_kd" / "__pycache__").mkdir(exist_ok=True)
    (src / "melanoma_kd" / "__pycache__" / "selection.cpython-311.pyc").write_bytes(b"\0")
    (src / "melanoma_kd" / "notes.txt").write_text("scratch\n")
    assert _write(root) == before


def test_the_committed_code_files_are_what_the_stage_writes(tmp_path: Path) -> None:
    out = tmp_path / "code"
    write_code_files(ROOT / "stages", ROOT / "src", out, ROOT)
    committed = {p.name: p.read_bytes() for p in (ROOT / "code").iterdir()}
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    names = written.keys() | committed.keys()
    stale = sorted(n for n in names if written.get(n) != committed.get(n))
    assert not stale, f"run `dvc repro code_deps` and commit code/: {stale}"


def test_a_failed_write_leaves_the_previous_code_files(tmp_path: Path) -> None:
    root = _project(tmp_path)
    before = _write(root)
    (root / "stages" / "broken.py").write_text("def (:\n")  # not Python: ast cannot parse it
    with pytest.raises(SyntaxError):
        _write(root)
    assert {p.name: p.read_text() for p in sorted((root / "code").iterdir())} == before
    assert not [p for p in root.iterdir() if p.name.startswith(".code.")]  # no temporary left


def test_an_added_import_enters_the_closure_within_one_process(tmp_path: Path) -> None:
    root = _project(tmp_path)
    script, src = root / "stages" / "select_teacher.py", root / "src"
    report = (src / "melanoma_kd" / "report.py").resolve()
    assert report not in import_closure(script, src)
    script.write_text(script.read_text() + "\nfrom melanoma_kd import report  # noqa\n")
    assert report in import_closure(script, src)
    assert "src/melanoma_kd/report.py" in fingerprint(script, src, root)
