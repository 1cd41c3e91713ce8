"""`import rare_core` stays light: no Prefect, no torch, no JVM."""

import subprocess
import sys


def test_import_rare_core_loads_neither_prefect_nor_torch():
    code = (
        "import sys, rare_core\n"
        "from rare_core import Doc2Query, BM25HardNeg, ReasonDistill, FileStorage, APILLMServing_request\n"
        "import rare_core.config\n"
        "bad = [m for m in ('prefect', 'torch', 'jnius', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import rare_core loaded: {out.stdout.strip()}"
