"""How DVC is installed decides how fast every ``dvc`` command is: each one parses dvc.yaml,
dvc.lock (240 KB) and params.yaml once per stage. ruamel.yaml 0.19 parses them in pure Python
unless ``ruamel.yaml.clib`` is installed; with it a no-op ``dvc repro`` of the default pipeline
takes about 3.1 s instead of 4.5 s (benchmarks/noop_repro.sh)."""

from __future__ import annotations

import inspect

from dvc.utils.serialize import _yaml as dvc_yaml
from ruamel.yaml import YAML


def test_dvc_parses_yaml_with_the_c_extension() -> None:
    # DVC builds YAML(typ="safe") for every file it reads, not only for updates ...
    assert inspect.signature(dvc_yaml.parse_yaml).parameters["typ"].default == "safe"
    # ... and that loader uses libyaml's C parser only when ruamel.yaml.clib is importable.
    parser = YAML(typ="safe").Parser
    assert parser.__module__.startswith("ruamel.yaml.clib"), parser
