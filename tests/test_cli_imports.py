"""The light commands never import torch, Ray, matplotlib, pandas or the `automoe.data`
package: `automoe --help`, `space show`, `subnet import` and `cost` (analytic counts) start
as fast as Python and the YAML reader allow. Each runs in a fresh interpreter, through the
CLI's `main`, which then reports the heavy modules found in ``sys.modules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces import load_space
from search_spaces.importers import to_hat_yaml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "matplotlib", "pandas")
HEAVY_PACKAGES = ("automoe.data",)  # the package and every submodule
MARK = "HEAVY_MODULES="

# Runs the CLI like the console script does, then prints which heavy modules it loaded.
WRAPPER = f"""
import sys
from automoe.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:  # --help leaves through argparse
    code = stop.code
loaded = [m for m in {HEAVY!r} if m in sys.modules]
loaded += sorted(m for m in sys.modules
                 if any(m == p or m.startswith(p + ".") for p in {HEAVY_PACKAGES!r}))
print({MARK!r} + ",".join(loaded), file=sys.stderr)
sys.exit(code)
"""


def _run(argv: list[str], prelude: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", prelude + WRAPPER, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(MARK)]
    assert len(lines) == 1, proc.stderr
    return proc, [m for m in lines[0][len(MARK):].split(",") if m]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A subnet JSON, its HAT YAML and a pre-LN exported model dir, all of space tiny."""
    from supernet import ModelOptions, Transformer

    root = tmp_path_factory.mktemp("cli_imports")
    config = load_space("tiny").largest()
    (root / "subnet.json").write_text(config.to_json())
    (root / "subnet.yml").write_text(to_hat_yaml(config))
    Transformer(config, 40, options=ModelOptions(normalize_before=True)).save(
        root / "model")
    return root


COMMANDS = {
    "help": lambda d: ["--help"],
    "space-show": lambda d: ["space", "show", "tiny"],
    "subnet-import": lambda d: ["subnet", "import", str(d / "subnet.yml"), "--space", "tiny"],
    "cost": lambda d: ["cost", str(d / "subnet.json"), "--space", "tiny", "--json"],
    "cost-model-dir": lambda d: ["cost", str(d / "model"), "--space", "tiny", "--json"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_light_commands_import_no_heavy_module(files, name):
    proc, heavy = _run(COMMANDS[name](files))
    assert proc.returncode == 0, proc.stderr
    assert heavy == [], f"`automoe {name}` imported {heavy}"
    assert proc.stdout.strip()  # it did its work: usage, a space, a subnet, a cost report
    if name.startswith("cost"):
        report = json.loads(proc.stdout)
        assert report["params_total"] > 0 and report["flops"] > 0
        assert report["normalize_before"] is (name == "cost-model-dir")


@pytest.mark.parametrize("module, expected", [
    ("torch", {"torch"}),
    ("pandas", {"pandas"}),
    ("automoe.data.clean", {"automoe.data", "automoe.data.clean"}),
])
def test_the_check_sees_a_heavy_import(files, module, expected):
    """The same wrapper reports a heavy module, or any module of a heavy package, when the
    process did import it."""
    proc, heavy = _run(COMMANDS["space-show"](files), prelude=f"import {module}\n")
    assert proc.returncode == 0, proc.stderr
    assert expected <= set(heavy)
    if module == "automoe.data.clean":
        assert all(m.startswith("automoe.data") for m in heavy), heavy
    else:
        assert heavy == [module]
