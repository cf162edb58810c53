"""The packages' import direction (docs/architecture.md): fr_models <- mixup_env <- agents <- privacy, and nothing
imports a script. Read from the source (every import statement, also those inside functions), not from what a
test happens to import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: package -> the first-party packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "fr_models": set(),
    "mixup_env": {"fr_models"},
    "agents": {"fr_models", "mixup_env"},
    "privacy": {"fr_models", "mixup_env", "agents"},
}
FIRST_PARTY = set(ALLOWED) | {"examples", "benchmarks", "tests", "conftest"}


def _imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_packages_import_only_the_packages_below_them():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = (_imports(path) & FIRST_PARTY) - allowed - {package}
            if bad:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not wrong, "imports against the layering of docs/architecture.md:\n" + "\n".join(wrong)


def test_nothing_imports_a_script():
    """Scripts in examples/ are command lines over the packages; no package, script or test imports one (tests run
    them as subprocesses)."""
    offenders = []
    for folder in ("mixup_env", "fr_models", "agents", "privacy", "examples", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            if "examples" in _imports(path) or "spec_from_file_location" in text and "examples" in text:
                offenders.append(str(path.relative_to(ROOT)))
    offenders.remove("tests/test_architecture.py")  # this file names the idiom it looks for
    assert not offenders, f"these import a script of examples/: {offenders}"


def test_the_check_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from privacy.grid import run_grid\n    import agents.sb3\n")
    assert _imports(bad) & FIRST_PARTY == {"privacy", "agents"}  # imports inside functions count too
