"""Every core module imports on its own: no import circle hides behind the order modules load in."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import taskbridge

CORE_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(taskbridge.__path__, "taskbridge.")
    if info.name != "taskbridge.__main__"
)


@pytest.mark.parametrize("module", CORE_MODULES)
def test_the_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_every_core_module_is_checked() -> None:
    assert {"taskbridge.job", "taskbridge.producer", "taskbridge.dispatch", "taskbridge.runner"} <= set(CORE_MODULES)
