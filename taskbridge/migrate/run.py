"""Running the codemod over files: which modules, their import names, the diff and the summary."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .transform import Change, Finding, Result, rewrite

_SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", "build", "dist"}


@dataclass
class FileReport:
    """One file: its source before and after, and what the codemod did or left."""

    path: Path
    before: str
    result: Result | None
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.result is not None and self.result.code != self.before

    def diff(self) -> str:
        """The unified diff of this file (empty if nothing changed)."""
        if self.result is None or not self.changed:
            return ""
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.result.code.splitlines(keepends=True),
                fromfile=str(self.path) if self.path.is_absolute() else f"a/{self.path}",
                tofile=str(self.path) if self.path.is_absolute() else f"b/{self.path}",
            )
        )


@dataclass
class Report:
    """The codemod's run over some paths."""

    files: list[FileReport] = field(default_factory=list)

    @property
    def changes(self) -> list[tuple[Path, Change]]:
        return [(f.path, c) for f in self.files if f.result for c in f.result.changes]

    @property
    def findings(self) -> list[tuple[Path, Finding]]:
        found = [(f.path, Finding(1, "file", f.error)) for f in self.files if f.error]
        return found + [(f.path, x) for f in self.files if f.result for x in f.result.findings]

    def diff(self) -> str:
        """The unified diff of every changed file."""
        return "".join(f.diff() for f in self.files)

    def summary(self) -> str:
        """What was rewritten (with behaviour notes) and what was left untouched, by file:line."""
        changed = sum(1 for f in self.files if f.changed)
        lines = [f"{len(self.changes)} task(s) rewritten in {changed} file(s); {len(self.findings)} left untouched"]
        for path, change in self.changes:
            lines.append(f"  {path}:{change.line}: {change.function}: {change.before} -> @job")
            lines.extend(f"      note: {note}" for note in change.notes)
        if self.findings:
            lines.append("left untouched (migrate these by hand):")
            lines.extend(f"  {path}:{f.line}: {f.what}: {f.reason}" for path, f in self.findings)
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Write every changed file in place."""
        for file in self.files:
            if file.changed and file.result is not None:
                file.path.write_text(file.result.code, encoding="utf-8")


def module_name(path: Path) -> str:
    """The import name of a module file: its package directories (those with ``__init__.py``) and its stem."""
    path = path.resolve()
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def python_files(paths: Iterable[Path]) -> list[Path]:
    """The ``.py`` files under ``paths`` (virtualenvs, builds and VCS folders skipped), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*.py")):
            if not _SKIPPED_DIRS & set(candidate.relative_to(path).parts[:-1]):
                found.append(candidate)
    return found


def migrate_paths(paths: Iterable[Path | str]) -> Report:
    """Run the codemod over the Python files under ``paths`` without writing anything."""
    import libcst

    report = Report()
    for path in python_files(Path(p) for p in paths):
        before = path.read_text(encoding="utf-8")
        try:
            result = rewrite(before, module_name(path))
        except libcst.ParserSyntaxError as exc:
            report.files.append(FileReport(path, before, None, f"not valid Python, skipped ({exc.message})"))
            continue
        report.files.append(FileReport(path, before, result))
    return report
