"""``make verify``: the committed ``dvc.lock`` and results must be exactly what the code produces.

Run after ``dvc repro`` (``make verify`` does both). First, ``dvc.lock`` may hold no entry of a
stage that ``dvc.yaml`` no longer defines (``make repro`` removes them: DVC does not), and no
stray file may sit in a folder that a stage depends on (it would make that folder's hash in
``dvc.lock`` unreproducible from a fresh clone). Then two checks, both against ``HEAD``:

1. **Not stale** (always, machine-independent): every stage's command, params and the hashes of
   its inputs (``params.yaml``, its ``code/<script>.txt``, the code folders ``code_deps`` reads)
   in the new ``dvc.lock`` equal the committed ones, and no stage appeared or vanished. A
   commit that changed code or params without rerunning the pipeline fails here.
2. **Bitwise** (the whole lock, every git-tracked file under ``code/``, ``metrics/``, ``plots/``,
   ``reports/``, and README.md with its generated results block): must be identical. CPU
   floating-point kernels differ between instruction sets
   (:mod:`melanoma_kd.cpu_kernels` pins them to AVX2 to make this rare). On the same CPU any
   difference fails.
3. **Numbers on another CPU**: when the bitwise check fails *and* ``reports/platform.json`` (the
   CPU that produced the committed results, written by ``make repro``) names a different CPU,
   the drifted files are listed and the numbers are checked instead (:func:`cross_cpu_failures`):
   every headline metric (``metrics/headline.json``) must lie within a tolerance derived from the
   committed between-seed sd, and every committed conclusion (the sign and significance of each
   paired gain) must still hold. Anything else fails.

Latency cannot be bitwise stable: the ``benchmark`` stage's timings are untracked files, and its
one DVC output (what was timed) is machine-independent, so its ``dvc.lock`` entry is checked
like every other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from melanoma_kd.catalog import EvaluationFiles
from melanoma_kd.cpu_kernels import platform_fingerprint
from melanoma_kd.io import atomic_path

CODE_DIR = "code"  # code/<script>.txt: what each stage runs (melanoma_kd.code_deps)
RESULT_DIRS = (CODE_DIR, "metrics", "plots", "reports", "README.md")
PLATFORM_FILE = Path("reports/platform.json")
HEADLINE_FILE = "metrics/headline.json"
_EVALUATION = EvaluationFiles()  # the layout dvc.yaml's evaluate stage writes
SEEDS_FILE = _EVALUATION.seeds.as_posix()
# The paired comparisons whose conclusions must survive a change of CPU.
COMPARISON_FILES = tuple(
    p.as_posix()
    for p in (_EVALUATION.kd_gain, _EVALUATION.student_vs_teacher, _EVALUATION.transfer)
)
# Another CPU's float rounding perturbs training like another seed does, so two runs of one
# model differ by about sqrt(2) between-seed sds; 2·sqrt(2)·sd covers 95 % of that.
TOLERANCE_SDS = 2.0 * 2.0**0.5
SIZE_RTOL = 0.01  # model sizes (MB) barely move with the weights' values


def _git(*args: str, check: bool = True) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check).stdout


def _stages(text: str) -> dict[str, Any]:
    lock = yaml.safe_load(text) or {}
    return dict(lock.get("stages", {}))


def _produced_paths(stages: dict[str, Any]) -> set[str]:
    return {out["path"] for entry in stages.values() for out in entry.get("outs", [])}


def _overlaps(path: str, produced: set[str]) -> bool:
    """``path`` is a stage output, lies inside one, or is a folder holding one."""
    return any(
        path == out or path.startswith(out + "/") or out.startswith(path + "/") for out in produced
    )


def _is_code_file(path: str) -> bool:
    """A ``code/<script>.txt`` file: written by the code_deps stage, but a pure function of the
    git-tracked code (hashes of source files), so a stage's code file counts as its input."""
    return path.startswith(CODE_DIR + "/")


def _inputs(entry: dict[str, Any], produced: set[str]) -> dict[str, Any]:
    """What a stage was asked to do: its command, params and the git-tracked input files that
    no stage writes (params, the code folders), plus its code file. A folder dependency that
    holds stage outputs (``metrics/teachers`` holds each teacher's run) is an output for this
    purpose: its hash follows the results, which the bitwise check compares."""
    deps = {
        d["path"]: d.get("md5")
        for d in entry.get("deps", [])
        if not _overlaps(d["path"], produced) or _is_code_file(d["path"])
    }
    return {"cmd": entry.get("cmd"), "params": entry.get("params"), "deps": deps}


def stale_stages(committed: str, current: str) -> list[str]:
    """Stages whose code, params or stage definition changed since the committed lock."""
    old, new = _stages(committed), _stages(current)
    produced = _produced_paths(old) | _produced_paths(new)
    return [
        name
        for name in sorted(old.keys() | new.keys())
        if name not in old
        or name not in new
        or _inputs(old[name], produced) != _inputs(new[name], produced)
    ]


def changed_results(committed: str, current: str) -> list[str]:
    """Lock entries and result files whose content differs from ``HEAD`` (or are untracked)."""
    old, new = _stages(committed), _stages(current)
    names = sorted(old.keys() | new.keys())
    changed = [f"dvc.lock [{s}]" for s in names if old.get(s) != new.get(s)]
    status = _git("status", "--porcelain", "--untracked-files=all", "--", *RESULT_DIRS)
    changed += [line[3:] for line in status.splitlines() if line.strip()]
    return [c for c in changed if c != PLATFORM_FILE.as_posix()]


def pipeline_stages() -> set[str]:
    """Names of the stages ``dvc.yaml`` defines now (foreach/matrix expanded)."""
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def prune_lock(lock_text: str, keep: set[str]) -> tuple[str, list[str]]:
    """``dvc.lock`` without the entries of stages not in ``keep``, and their names.

    DVC never deletes the entry of a stage that left ``dvc.yaml`` (a teacher dropped from
    ``teachers.archs``, a removed grid point); such an entry would keep claiming outputs that no
    longer exist. Entries are cut as text, so the rest of the file keeps DVC's formatting.
    """
    names = set((yaml.safe_load(lock_text) or {}).get("stages", {}))
    gone = sorted(names - keep)
    if not gone:
        return lock_text, []
    out, skipping = [], False
    for line in lock_text.splitlines(keepends=True):
        if line.startswith("  ") and not line.startswith("   "):
            skipping = line.strip().removesuffix(":").strip("'\"") in gone
        elif not line.startswith("  "):
            skipping = False
        if not skipping:
            out.append(line)
    text = "".join(out)
    left = set((yaml.safe_load(text) or {}).get("stages", {}))
    if left != names - set(gone):
        raise ValueError("dvc.lock: could not remove the entries of removed stages")
    return text, gone


def stray_files(
    lock_text: str, root: Path = Path("."), stages: set[str] | None = None
) -> list[str]:
    """Files inside a folder dependency that no stage writes and git does not track
    (``.gitignore`` aside).

    Such a file (say, the model of a teacher since removed from ``teachers.archs``) enters the
    folder's hash in ``dvc.lock`` but is absent from a fresh clone, so the committed lock could
    never be reproduced there; a git-tracked file (a folder's README) is in every clone.
    ``stages`` limits the lock to the stages the pipeline has now.
    """
    stages_ = (yaml.safe_load(lock_text) or {}).get("stages", {})
    if stages is not None:
        stages_ = {k: v for k, v in stages_.items() if k in stages}
    produced = _produced_paths(stages_)
    folders = {
        d["path"]
        for entry in stages_.values()
        for d in entry.get("deps", [])
        if any(out.startswith(d["path"] + "/") for out in produced)
    }
    tracked = set()
    if folders:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--", *sorted(folders)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        tracked = {f for f in listed.split("\0") if f}
    stray = []
    for folder in sorted(folders):
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if (
                path.is_file()
                and path.name != ".gitignore"
                and rel not in tracked
                and not _overlaps(rel, produced)
            ):
                stray.append(rel)
    return stray


def _report_stray(lock_text: str, stages: set[str]) -> bool:
    stray = stray_files(lock_text, stages=stages)
    if stray:
        print(
            "make verify: these files are no stage's output (left over from an earlier pipeline?)"
            " but enter dvc.lock through a folder dependency; delete them (and `git rm` the"
            " tracked ones), then rerun:",
            file=sys.stderr,
        )
        for path in stray:
            print(f"  {path}", file=sys.stderr)
    return bool(stray)


def _cpu_id() -> str:
    """``vendor family model stepping`` from /proc/cpuinfo ('' elsewhere): under virtualisation
    the model name can be just "AMD EPYC" for CPU generations whose BLAS kernels differ."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    keys = ("vendor_id", "cpu family", "model", "stepping")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # the first processor's block
        key, _, value = line.partition(":")
        if key.strip() in keys:
            fields.setdefault(key.strip(), value.strip())
    return " ".join(fields.get(k, "?") for k in keys)


def _blas() -> list[str]:
    """The BLAS builds NumPy and SciPy loaded, each with the kernel set it picked for this CPU
    and its thread count. OpenBLAS picks its kernels by CPU when it loads and
    :mod:`melanoma_kd.cpu_kernels` does not cap it, so two hosts with the same ISA flags can sum
    scikit-learn's baselines in different orders."""
    import numpy  # noqa: F401  (loads its OpenBLAS)
    import scipy.linalg  # noqa: F401  (loads SciPy's)
    from threadpoolctl import threadpool_info

    return sorted(
        {
            f"{i['internal_api']} {i.get('version')} {i.get('architecture')}"
            f" threads={i['num_threads']}"
            for i in threadpool_info()
            if i["user_api"] == "blas"
        }
    )


def result_platform() -> dict[str, object]:
    """What decides whether CPU floating-point results can be bitwise equal:
    :func:`~melanoma_kd.cpu_kernels.platform_fingerprint` (ISA flags, torch, pinned kernels) plus
    the CPU's family/model and the BLAS kernels in use. The additions live here, not in
    ``cpu_kernels`` (a code dependency of most stages, so editing it reruns them)."""
    return {**platform_fingerprint(), "cpu_id": _cpu_id(), "blas": _blas()}


def record_platform(path: Path = PLATFORM_FILE) -> None:
    """Write which CPU produced the results in the working tree (``make repro`` calls this)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result_platform(), indent=2, sort_keys=True) + "\n")


def _committed_platform() -> dict[str, Any] | None:
    text = _git("show", f"HEAD:{PLATFORM_FILE.as_posix()}", check=False)
    return json.loads(text) if text.strip() else None


def _committed_json(path: str) -> dict[str, Any] | None:
    text = _git("show", f"HEAD:{path}", check=False)
    return json.loads(text) if text.strip() else None


def _current_json(path: str) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


def headline_tolerances(seeds: Mapping[str, Any]) -> dict[str, float]:
    """Allowed |current - committed| for ROC-AUC-like and pAUC-like headline keys, from the
    committed seed replicates (the larger of the scratch and KD students' sds)."""
    try:
        sd = {
            m: max(float(seeds[f"scratch_{m}_sd"]), float(seeds[f"kd_{m}_sd"]))
            for m in ("roc_auc", "pauc")
        }
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{SEEDS_FILE}: needs scratch/kd roc_auc_sd and pauc_sd") from None
    return {m: TOLERANCE_SDS * v for m, v in sd.items()}


CI_LO = "_delta_ci_lo"


def comparison_names(comparison: Mapping[str, Any]) -> list[str]:
    """The paired comparisons a file holds, by key prefix: ``roc_auc`` and ``pauc`` in a plain
    comparison, ``effect_roc_auc``, ``gain_without_pauc``, ... in one that holds several."""
    return sorted(k[: -len(CI_LO)] for k in comparison if k.endswith(CI_LO))


def conclusion(comparison: Mapping[str, Any], metric: str) -> str:
    """What a paired comparison concluded: '+' / '-' when its 95 % CI excludes 0, else
    'within noise'."""
    lo, hi = comparison[f"{metric}_delta_ci_lo"], comparison[f"{metric}_delta_ci_hi"]
    return "+" if lo > 0 else "-" if hi < 0 else "within noise"


def cross_cpu_failures(
    old_head: Mapping[str, Any],
    new_head: Mapping[str, Any],
    seeds: Mapping[str, Any],
    old_comparisons: Mapping[str, Mapping[str, Any] | None],
    new_comparisons: Mapping[str, Mapping[str, Any] | None],
) -> tuple[list[str], list[str]]:
    """(failures, notes) of the numbers check on another CPU (see the module docstring).

    Numeric headline keys: sizes (``*_mb``) within :data:`SIZE_RTOL`; p-values (``*_p``) are
    judged through the conclusions instead; every other key within the ROC-AUC tolerance, or the
    pAUC one when its name says pAUC (ECE has no seed sd of its own and uses ROC-AUC's). Text keys
    (which model was selected) may change between near-equal candidates: noted, not failed.
    """
    tol = headline_tolerances(seeds)
    failures, notes = [], []
    for key in sorted(old_head.keys() | new_head.keys()):
        if key not in old_head or key not in new_head:
            failures.append(f"{HEADLINE_FILE}: key {key!r} is only on one side")
            continue
        old, new = old_head[key], new_head[key]
        if isinstance(old, str) or isinstance(new, str):
            if old != new:
                notes.append(f"{key}: {old} -> {new}")
            continue
        if key.endswith("_p"):
            continue
        if key.endswith("_mb"):
            limit = SIZE_RTOL * abs(float(old))
        else:
            limit = tol["pauc" if "pauc" in key else "roc_auc"]
        if abs(float(new) - float(old)) > limit:
            failures.append(f"{HEADLINE_FILE}: {key} {old} -> {new} moved more than {limit:.4f}")
    for path, old_c in old_comparisons.items():
        new_c = new_comparisons.get(path)
        if old_c is None:
            continue
        if new_c is None:
            failures.append(f"{path}: committed but not produced here")
            continue
        for name in comparison_names(old_c):
            if f"{name}{CI_LO}" not in new_c:
                failures.append(f"{path}: comparison {name!r} committed but not produced here")
                continue
            was, now = conclusion(old_c, name), conclusion(new_c, name)
            if was != now:
                failures.append(f"{path}: {name} conclusion changed: {was} -> {now}")
    return failures, notes


def _check_numbers() -> int:
    """The numbers check of another CPU's results against the committed ones."""
    old_head, new_head = _committed_json(HEADLINE_FILE), _current_json(HEADLINE_FILE)
    seeds = _committed_json(SEEDS_FILE)
    if old_head is None or new_head is None or seeds is None:
        print(
            f"make verify: cannot compare numbers across CPUs: {HEADLINE_FILE} or {SEEDS_FILE}"
            " is missing (committed or produced)",
            file=sys.stderr,
        )
        return 1
    failures, notes = cross_cpu_failures(
        old_head,
        new_head,
        seeds,
        {p: _committed_json(p) for p in COMPARISON_FILES},
        {p: _current_json(p) for p in COMPARISON_FILES},
    )
    for note in notes:
        print(f"  note: {note}")
    if failures:
        print("make verify: on this CPU the results moved beyond noise:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    tol = headline_tolerances(seeds)
    print(
        f"make verify: passed on another CPU: {len(new_head)} headline metrics within tolerance"
        f" (ROC-AUC ±{tol['roc_auc']:.4f}, pAUC ±{tol['pauc']:.4f}: {TOLERANCE_SDS:.2f} seed sd)"
        f" and every committed conclusion of {', '.join(COMPARISON_FILES)} holds"
    )
    return 0


def verify() -> int:
    committed = _git("show", "HEAD:dvc.lock")
    current = Path("dvc.lock").read_text()
    stages = pipeline_stages()
    removed = prune_lock(current, stages)[1]
    if removed:
        print(
            "make verify: dvc.lock still holds stages that dvc.yaml no longer defines (run"
            f" `make repro`, which removes them): {', '.join(removed)}",
            file=sys.stderr,
        )
        return 1
    if _report_stray(current, stages):
        return 1
    stale = stale_stages(committed, current)
    if stale:
        print(
            "make verify: committed results are stale; the code, params or definition of these"
            " stages changed since dvc.lock was committed:",
            file=sys.stderr,
        )
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        print("run `make repro` and commit dvc.lock and the result files", file=sys.stderr)
        return 1
    changed = changed_results(committed, current)
    if not changed:
        print("make verify: dvc.lock and committed results match the code bit for bit")
        return 0
    here, there = result_platform(), _committed_platform()
    if there is not None and there != here:
        print("make verify: not stale (code, params and stages match dvc.lock), but this CPU")
        cpu_here = f"{here['cpu_model']}, {', '.join(here['isa_flags'])}"
        cpu_there = f"{there['cpu_model']}, {', '.join(there['isa_flags'])}"
        differs = sorted(k for k in here.keys() | there.keys() if here.get(k) != there.get(k))
        print(f"  ({cpu_here}) differs from the one that produced the committed results")
        print(f"  ({cpu_there}) in {', '.join(differs)};")
        print("  floating-point outputs drifted and cannot be compared bitwise across CPUs:")
        for path in changed:
            print(f"    {path}")
        return _check_numbers()
    print("make verify: committed results differ from what the code produces:", file=sys.stderr)
    for path in changed:
        print(f"  {path}", file=sys.stderr)
    print("run `make repro` and commit dvc.lock and the result files", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write reports/platform.json")
    args = parser.parse_args(argv)
    if args.record:
        stages = pipeline_stages()
        lock = Path("dvc.lock")
        text, removed = prune_lock(lock.read_text(), stages)
        if removed:
            with atomic_path(lock) as tmp:
                tmp.write_text(text)
            print(
                f"make repro: removed from dvc.lock the stages dvc.yaml no longer defines: "
                f"{', '.join(removed)}"
            )
        if _report_stray(text, stages):
            raise SystemExit(1)
        record_platform()
        return
    raise SystemExit(verify())


if __name__ == "__main__":
    main()
