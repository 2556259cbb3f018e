"""The libcst transformer: Celery task and Dramatiq actor decorators on module-level functions become
``@job(...)``; everything else in the file, comments and layout included, stays as it was."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor, RemoveImportsVisitor
from libcst.metadata import PositionProvider

from ..compat import alternative
from .options import Mapped, map_celery, map_dramatiq

_EMPTY = cst.Module([])
_CANVAS = {
    "chord": "chord has no automatic rewrite: use taskbridge.workflows.group(parts).then(callback.s()), "
    "whose callback runs once with the counts of done and dead parts",
    "group": "group has no automatic rewrite: use taskbridge.workflows.group(a.s(i) for i in ids).enqueue()",
    "chain": "use taskbridge.compat.chain (or a.s(...).then(b.s(...))); each step receives the previous "
    "result as its first argument (a step made with .si() does not)",
}


@dataclass(frozen=True)
class Change:
    """One decorator rewritten."""

    line: int
    function: str
    before: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """Something left as it was, and why."""

    line: int
    what: str
    reason: str


@dataclass
class Result:
    """The rewritten source of one module, with what changed and what was left."""

    code: str
    changes: list[Change] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def rewrite(source: str, module: str) -> Result:
    """Rewrite the task decorators of one module; ``module`` is its import name (Celery's default
    task names are ``module.function``). Raises ``libcst.ParserSyntaxError`` on invalid Python."""
    tree = cst.parse_module(source)
    context = CodemodContext()
    wrapper = cst.MetadataWrapper(tree)
    rewriter = _Rewriter(module, context)
    new_tree = wrapper.visit(rewriter)
    if rewriter.changes:
        AddImportsVisitor.add_needed_import(context, "taskbridge", "job")
        if rewriter.uses_backoff:
            AddImportsVisitor.add_needed_import(context, "taskbridge", "Backoff")
        for module_name, obj in (("celery", "shared_task"), ("dramatiq", "actor"), ("dramatiq", None)):
            RemoveImportsVisitor.remove_unused_import(context, module_name, obj)
        for module_name, obj, asname in rewriter.apps:
            RemoveImportsVisitor.remove_unused_import(context, module_name, obj, asname)
        new_tree = AddImportsVisitor(context).transform_module(new_tree)
        new_tree = RemoveImportsVisitor(context).transform_module(new_tree)
    return Result(new_tree.code, rewriter.changes, rewriter.findings)


class _Rewriter(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, module: str, context: CodemodContext) -> None:
        super().__init__()
        self.module = module
        self.context = context
        self.changes: list[Change] = []
        self.findings: list[Finding] = []
        self.uses_backoff = False
        self._depth = 0
        self._imports_celery = False
        self._celery_names: set[str] = set()
        self._dramatiq_names: set[str] = set()
        self._import_of: dict[str, tuple[str, str, str | None]] = {}
        self.apps: set[tuple[str, str, str | None]] = set()
        """``from proj.celery import app`` imports whose app decorated a rewritten task."""

    # What the module imports decides which decorators are tasks.

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            top = _EMPTY.code_for_node(alias.name).split(".")[0]
            if top == "celery":
                self._imports_celery = True

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is None or isinstance(node.names, cst.ImportStar):
            return
        if not node.relative:
            module = _EMPTY.code_for_node(node.module)
            for alias in node.names:
                local = alias.evaluated_alias or alias.evaluated_name
                self._import_of[local] = (module, alias.evaluated_name, alias.evaluated_alias)
        source = _EMPTY.code_for_node(node.module).split(".")[0]
        if source not in ("celery", "dramatiq"):
            return
        self._imports_celery |= source == "celery"
        for alias in node.names:
            local = alias.evaluated_alias or alias.evaluated_name
            (self._celery_names if source == "celery" else self._dramatiq_names).add(f"{alias.evaluated_name}={local}")

    def _imported(self, names: set[str], original: str, local: str) -> bool:
        return f"{original}={local}" in names

    # Nesting: only module-level functions are tasks the codemod rewrites.

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._depth += 1

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef) -> cst.ClassDef:
        self._depth -= 1
        return updated

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._depth += 1

    def visit_Call(self, node: cst.Call) -> None:
        name = node.func.value if isinstance(node.func, cst.Name) else None
        if name in _CANVAS and self._imported(self._celery_names, name, name):
            self.findings.append(Finding(self._line(node), f"{name}(...)", _CANVAS[name]))
        if isinstance(node.func, cst.Attribute) and node.func.attr.value in ("apply_async", "send_with_options"):
            for arg in node.args:
                option = arg.keyword.value if arg.keyword is not None else ""
                instead = alternative(option)
                if instead is not None:
                    call = f"{_EMPTY.code_for_node(node.func)}({option}=...)"
                    self.findings.append(Finding(self._line(node), call, f"raises at run time: {instead}"))

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        self._depth -= 1
        for index, decorator in enumerate(updated.decorators):
            engine = self._engine_of(decorator.decorator)
            if engine is None:
                continue
            line = self._line(original.decorators[index])
            if self._depth:
                self.findings.append(
                    Finding(line, original.name.value, "a task inside a class or function: move it to module level")
                )
                return updated
            return self._rewrite(updated, index, engine, line)
        return updated

    def _engine_of(self, expression: cst.BaseExpression) -> str | None:
        target = expression.func if isinstance(expression, cst.Call) else expression
        if isinstance(target, cst.Name):
            if self._imported(self._celery_names, "shared_task", target.value):
                return "celery"
            if self._imported(self._dramatiq_names, "actor", target.value):
                return "dramatiq"
        if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name):
            if target.value.value == "dramatiq" and target.attr.value == "actor":
                return "dramatiq"
            if target.attr.value == "task" and self._is_celery_app(target.value.value):
                return "celery"
        return None

    def _is_celery_app(self, name: str) -> bool:
        """``@<name>.task`` is Celery's when the module imports celery, or imports ``<name>`` from a
        module with "celery" in its path (``from proj.celery import app``)."""
        if self._imports_celery or self._celery_names:
            return True
        imported = self._import_of.get(name)
        return imported is not None and "celery" in imported[0]

    def _rewrite(self, function: cst.FunctionDef, index: int, engine: str, line: int) -> cst.FunctionDef:
        decorator = function.decorators[index]
        before = "@" + _EMPTY.code_for_node(decorator.decorator)
        name = function.name.value
        options: dict[str, cst.BaseExpression] = {}
        if isinstance(decorator.decorator, cst.Call):
            for arg in decorator.decorator.args:
                if arg.keyword is None:
                    self.findings.append(Finding(line, name, "positional or ** decorator arguments"))
                    return function
                options[arg.keyword.value] = arg.value
        mapped = map_celery(options) if engine == "celery" else map_dramatiq(options)
        notes = list(mapped.notes)
        if mapped.problem:
            self.findings.append(Finding(line, name, mapped.problem))
            return function
        if engine == "celery" and _is_true(options.get("bind")):
            unbound = _without_bound_self(function)
            if isinstance(unbound, str):
                self.findings.append(Finding(line, name, unbound))
                return function
            function = unbound
            notes.append("bind=True removed: the body did not use the task instance")
        if not mapped.aliases:
            mapped.aliases.append(f"{self.module}.{name}" if engine == "celery" else name)
        self.uses_backoff |= mapped.uses_backoff
        target = decorator.decorator.func if isinstance(decorator.decorator, cst.Call) else decorator.decorator
        if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name):
            imported = self._import_of.get(target.value.value)
            if imported is not None:
                self.apps.add(imported)
        comments = _Comments()
        decorator.decorator.visit(comments)
        new_decorator = decorator.with_changes(
            decorator=_job_call(mapped, multiline="\n" in before),
            leading_lines=[*decorator.leading_lines, *(cst.EmptyLine(comment=c) for c in comments.found)],
        )
        decorators = [*function.decorators[:index], new_decorator, *function.decorators[index + 1 :]]
        first_line = before.split("\n")[0] + (" ..." if "\n" in before else "")
        self.changes.append(Change(line, name, first_line, tuple(notes)))
        return function.with_changes(decorators=decorators)

    def _line(self, node: cst.CSTNode) -> int:
        return int(self.get_metadata(PositionProvider, node).start.line)


def _is_true(node: cst.BaseExpression | None) -> bool:
    return isinstance(node, cst.Name) and node.value == "True"


def _job_call(mapped: Mapped, *, multiline: bool) -> cst.BaseExpression:
    parts = [f"{key}={_EMPTY.code_for_node(value)}" for key, value in mapped.keywords]
    parts.append("aliases=[" + ", ".join(_quoted(a) for a in mapped.aliases) + "]")
    one_line = "job(" + ", ".join(parts) + ")"
    if not multiline and len(one_line) <= 100:
        return cst.parse_expression(one_line)
    return cst.parse_expression("job(\n" + "".join(f"    {part},\n" for part in parts) + ")")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Comments(cst.CSTVisitor):
    """The comments inside the old decorator's arguments, kept above the new one."""

    def __init__(self) -> None:
        self.found: list[cst.Comment] = []

    def visit_Comment(self, node: cst.Comment) -> None:
        self.found.append(node)


class _Uses(cst.CSTVisitor):
    """Where a function body uses a name, and whether it calls ``<name>.retry(...)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.used = False
        self.retries = False

    def visit_Name(self, node: cst.Name) -> None:
        if node.value == self.name:
            self.used = True

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if (
            isinstance(func, cst.Attribute)
            and isinstance(func.value, cst.Name)
            and func.value.value == self.name
            and func.attr.value == "retry"
        ):
            self.retries = True


def _without_bound_self(function: cst.FunctionDef) -> cst.FunctionDef | str:
    """The function without its bound task parameter, or why that parameter cannot go."""
    params = function.params.params
    if not params:
        return "bind=True but the function takes no parameter for the task"
    bound = params[0].name.value
    uses = _Uses(bound)
    function.body.visit(uses)
    if uses.retries:
        return (
            f"bind=True body calls {bound}.retry(...): raise an exception listed in retry=Backoff(on=...) "
            "instead (the retry delay comes from the Backoff)"
        )
    if uses.used:
        return f"bind=True body uses the task instance ({bound}.request, {bound}.update_state, ...): rewrite by hand"
    new_params = function.params.with_changes(params=params[1:])
    return function.with_changes(params=new_params)
