"""The layering: `import rare_core` stays light (no Prefect, no torch, no JVM, no web stack);
imports run one way (`rare_core` never imports the layers above it, nor the simulator
`rare_sim`, which imports only the core); the web stack is the simulator's extra, not a core
dependency."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_rare_core_loads_neither_prefect_nor_torch():
    code = (
        "import sys, rare_core\n"
        "from rare_core import Doc2Query, BM25HardNeg, ReasonDistill, FileStorage, APILLMServing_request\n"
        "import rare_core.config, rare_core.prompts.view, rare_core.llm.simulated\n"
        "bad = [m for m in ('prefect', 'torch', 'jnius', 'fastapi', 'uvicorn', 'rare_sim') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import rare_core loaded: {out.stdout.strip()}"


def imported_packages(package: str) -> dict[str, set[str]]:
    """Each module file of ``package`` -> the top-level packages it imports (anywhere in it)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


def test_rare_core_never_imports_the_simulator_or_the_layers_above():
    above = {"rare_sim", "tasks", "flows", "deployments", "prefect"}
    wrong = {path: sorted(names & above) for path, names in imported_packages("rare_core").items() if names & above}
    assert wrong == {}


def test_rare_sim_imports_the_core_only():
    above = {"tasks", "flows", "deployments", "prefect"}
    modules = imported_packages("rare_sim")
    assert any("rare_core" in names for names in modules.values())
    wrong = {path: sorted(names & above) for path, names in modules.items() if names & above}
    assert wrong == {}


def test_the_web_stack_is_the_simulators_extra_not_a_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    core = {req.split(">")[0].split("[")[0].strip() for req in project["project"]["dependencies"]}
    sim = {req.split(">")[0].strip() for req in project["project"]["optional-dependencies"]["sim"]}
    assert not core & {"fastapi", "uvicorn"}
    assert sim == {"fastapi", "uvicorn"}
    assert "rare_sim*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
