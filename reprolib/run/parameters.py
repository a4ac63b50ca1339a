"""A notebook's parameters: what its `parameters` cell declares, what papermill injected, and the
checks that stop a run before any compute when a parameter is misspelled or ill-typed.

papermill writes the values it is given into a cell that starts with "# Parameters" and runs it
after the notebook's own parameters cell; a name the notebook does not declare only draws a
warning from papermill and the run would go on with the default. IPython keeps every executed
cell's source in the namespace's `In` list, so the harness reads the injected names from there
(outside IPython there is nothing injected and nothing to check).

Types are checked against the literal defaults: an int knob takes an int, a float knob an int or a
float, a list knob a list of the same kind of elements, a dict knob a dict with known keys; a knob
whose default is None or not a literal is not type-checked. papermill's `-p` passes any value it
cannot read as a number or a boolean as text: lists and dicts go through `-y` (YAML).
"""
from __future__ import annotations

import ast
import difflib
import json
import warnings
from pathlib import Path

from .provenance import repo_root

INJECTED_MARK = "# Parameters\n"


def declared(nb: Path) -> dict:
    """{name: default} for the names the notebook's `parameters` cell assigns; a default that is not
    a literal is recorded as the sentinel NOT_LITERAL (no type check)."""
    cells = json.loads(Path(nb).read_text())["cells"]
    src = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if src is None:
        return {}
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign):
            value = _literal(node.value)
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = value
    return out


def _literal(node):
    """ast.literal_eval, also through dict(key=literal, ...); NOT_LITERAL where neither applies."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        values = {k.arg: _literal(k.value) for k in node.keywords}
        return NOT_LITERAL if None in values or NOT_LITERAL in values.values() else values
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NOT_LITERAL


class _NotLiteral:
    def __repr__(self):
        return "<not a literal>"


NOT_LITERAL = _NotLiteral()


def injected(namespace: dict) -> dict | None:
    """{name: value} of the parameters papermill injected into this namespace; None outside IPython."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return None
    out = {}
    for src in history:
        if isinstance(src, str) and src.startswith(INJECTED_MARK):
            for node in ast.parse(src).body:
                for t in getattr(node, "targets", []):
                    if isinstance(t, ast.Name) and t.id in namespace:
                        out[t.id] = namespace[t.id]
    return out


def _kind(x) -> str:
    return {bool: "a bool", int: "an int", float: "a number", str: "a string", list: "a list", tuple: "a list",
            dict: "a dict"}.get(type(x), type(x).__name__)


def type_error(name: str, default, value) -> str | None:
    """Why `value` cannot stand for a knob whose default is `default` (None: it can)."""
    if default is None or default is NOT_LITERAL:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return f"{name} must be {_kind(default)} like {default!r}, got {_kind(value)} {value!r}"
        kinds = {type(d) for d in default}
        if len(kinds) == 1:   # a homogeneous list: every element like the first
            for i, v in enumerate(value):
                why = type_error(f"{name}[{i}]", default[0], v)
                if why:
                    return why
        return None
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            return f"{name} must be a dict like {default!r}, got {_kind(value)} {value!r}"
        for k, v in value.items():
            if k not in default:
                return f"{name} has no key {k!r}; its keys: {sorted(default)}"
            why = type_error(f"{name}[{k!r}]", default[k], v)
            if why:
                return why
        return None
    else:
        return None
    return None if ok else f"{name} must be {_kind(default)} like {default!r}, got {_kind(value)} {value!r}"


def _example(name: str, default) -> str:
    if isinstance(default, (list, tuple, dict)):
        return f"-y '{name}: {json.dumps(default)}'"
    return f"-p {name} {default}"


def check(nb: Path, given: dict, defaults: dict | None = None) -> None:
    """Raise ValueError naming the first misspelled or ill-typed parameter, with a valid example."""
    defaults = declared(nb) if defaults is None else defaults
    try:
        shown = nb.resolve().relative_to(repo_root().resolve()).as_posix()   # as typed from the repository root
    except ValueError:
        shown = nb.name
    how = f"papermill {shown} out.ipynb"
    for name, value in given.items():
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            knobs = [n for n, d in defaults.items() if n not in ("scale", "seeds", "device")
                     and isinstance(d, (int, float, str))] + ["seeds"]
            example = close[0] if close else knobs[0]
            raise ValueError(f"unknown parameter {name!r}: {hint}this notebook's parameters are "
                             f"{', '.join(defaults)}. Example: {how} {_example(example, defaults.get(example))}")
        why = type_error(name, defaults[name], value)
        if why:
            text = " (papermill's -p passes text: give lists and dicts with -y)" if isinstance(value, str) else ""
            raise ValueError(f"parameter {why}{text}. Example: {how} {_example(name, defaults[name])}")


class SmokeOverrides:
    """Warns once per parameter when a changed parameter reaches run.pick(smoke=..., full=...) at smoke
    scale, where the notebook's smoke size replaces it."""

    def __init__(self, changed: dict):
        self.changed, self.warned = changed, set()

    def seen(self, full, smoke) -> None:
        parts = list(full.values()) if isinstance(full, dict) else list(full) if isinstance(full, (list, tuple)) else []
        for name, value in self.changed.items():
            if name in self.warned:
                continue
            if full is value or any(p is value for p in parts):
                self.warned.add(name)
                warnings.warn(f"parameter {name}={value!r} takes effect at full scale only: at smoke scale the "
                              f"notebook's smoke size ({smoke!r}) replaces it. Run with scale='full' (a GPU) to "
                              "use it.", UserWarning, stacklevel=3)
