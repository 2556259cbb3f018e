"""The codemod from Celery and Dramatiq: task decorators become ``@job``, old names stay as aliases.

``taskbridge migrate PATH [--write]`` on the command line; :func:`migrate_paths` and :func:`rewrite`
in code. Needs libcst (``pip install 'taskbridge-jobs[migrate]'``), imported only when used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["migrate_paths", "module_name", "rewrite"]


def __getattr__(name: str) -> Any:
    if name in ("migrate_paths", "module_name"):
        from . import run

        return getattr(run, name)
    if name == "rewrite":
        from .transform import rewrite

        return rewrite
    raise AttributeError(name)
