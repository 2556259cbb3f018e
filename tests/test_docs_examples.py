"""The Python examples in docs/ run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("page", ["events.md"])
def test_the_python_example_runs(tmp_path: Path, page: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)
    assert blocks, f"{page} has no python example"
    for number, code in enumerate(blocks):
        script = tmp_path / f"example_{number}.py"
        script.write_text(code, encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{page} example {number} failed:\n{done.stderr}"
