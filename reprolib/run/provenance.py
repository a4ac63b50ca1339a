"""Provenance: which code a result came from, and whether a rerun would run other code.

results.json records (scheme 3):
  notebook  a hash of the notebook's code cells as Python syntax trees: comments, blank lines and
            formatting do not count, code does (a cell that is not plain Python, e.g. a shell escape,
            counts as text); markdown, outputs and the cell papermill injects never count.
  modules   for every reprolib module the run imported, a hash per unit of code:
              "def <name>"     each top-level function or class (docstrings do not count),
              "export <key>"   each entry of a lazy-export table (`_EXPORTS = exports_of({...})`),
              "stmt <hash>"    every other top-level statement (imports, constants), keyed by itself.
A result is stale when a recorded unit changed or is gone. A unit added since the run (a new
function, a new export, a new import) does not make it stale: code the run never had cannot have
changed what it did. Code that a new unit runs at import time and that mutates state the old code
reads would escape this rule; the library keeps such registration out of module bodies.

The trees are written out by `_dump`, the same text on every Python version. This module itself is
not recorded: it only does the bookkeeping, and what it computes never reaches a result.

Older records are still read. Scheme 1: one sha of the raw file per module and of the raw code cells
per notebook; any byte changed makes them stale. Scheme 2: as scheme 3, but trees written by
`ast.dump`, whose text depends on the Python version (3.12 added `type_params` to every function and
class), so a scheme-2 record is checked correctly only on the Python minor version that made it.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path

SCHEME = 3
SELF = "reprolib/run/provenance.py"   # not recorded (see the module docstring)


def repo_root() -> Path:
    """The checkout holding notebooks/ and figures/: $REPRO_ROOT (the runner sets it for its
    notebooks), else an editable install's parent, else the cwd."""
    if os.environ.get("REPRO_ROOT"):
        return Path(os.environ["REPRO_ROOT"])
    here = Path(__file__).resolve().parents[2]
    return here if (here / "notebooks").is_dir() else Path.cwd()


def notebook_path(slug: str, root: Path | None = None) -> Path | None:
    found = sorted(p for p in (root or repo_root()).glob(f"notebooks/**/{slug}.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    return found[0] if found else None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def code_cells(nb: dict) -> list[str]:
    """The code cells a run executes, without the parameters papermill injects."""
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        src = cell["source"]
        out.append("".join(src) if isinstance(src, list) else src)
    return out


def _dump(node) -> str:
    """A syntax tree as text, fields by name; a field that is None or an empty list is left out,
    because Python versions differ in which such fields a node has and in how `ast.dump` shows them."""
    if isinstance(node, ast.AST):
        fields = ((k, getattr(node, k, None)) for k in node._fields)
        return f"{type(node).__name__}({', '.join(f'{k}={_dump(v)}' for k, v in fields if v is not None and v != [])})"
    if isinstance(node, list):
        return f"[{', '.join(_dump(x) for x in node)}]"
    return repr(node)


def _tree(node: ast.AST, scheme: int = SCHEME) -> str:
    """A syntax tree as text, without positions (so without comments and formatting)."""
    return _dump(node) if scheme >= 3 else ast.dump(node, annotate_fields=False, include_attributes=False)


def _drop_docstrings(node: ast.AST) -> ast.AST:
    node = ast.parse(ast.unparse(node)) if not isinstance(node, ast.Module) else node   # a private copy
    for n in ast.walk(node):
        body = getattr(n, "body", None)
        if (isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            n.body = body[1:] or [ast.Pass()]
    return node


def _cell_text(src: str, scheme: int = SCHEME) -> str:
    try:
        return _tree(ast.parse(src), scheme)   # a notebook's strings stay: a bare string can be a cell's output
    except SyntaxError:                # IPython syntax (magics, shell escapes): the text itself
        return src


def notebook_hash(path: Path, scheme: int = SCHEME) -> str:
    cells = code_cells(json.loads(Path(path).read_text()))
    if scheme == 1:
        return _sha("\n\x00".join(cells).encode())
    return _sha("\n\x00".join(_cell_text(c, scheme) for c in cells).encode())


def _exports_table(node: ast.stmt):
    """The dict literal of `_EXPORTS = {...}` or `_EXPORTS = exports_of({...})`, else None."""
    if not (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["_EXPORTS"]):
        return None
    value = node.value
    if isinstance(value, ast.Call) and len(value.args) == 1:
        value = value.args[0]
    return value if isinstance(value, ast.Dict) and None not in value.keys else None


def module_units(source: str, scheme: int = SCHEME) -> dict[str, str]:
    """{unit: sha} for one module's source (see the module docstring)."""
    units = {}
    for node in _drop_docstrings(ast.parse(source)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            units[f"def {node.name}"] = _sha(_tree(node, scheme).encode())
        elif (table := _exports_table(node)) is not None:
            for key, value in zip(table.keys, table.values):
                units[f"export {ast.unparse(key)}"] = _sha(_tree(value, scheme).encode())
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] in (["__all__"],
                                                                                                   ["__version__"]):
            continue   # which names exist and the package's version: not what the code does
        else:
            h = _sha(_tree(node, scheme).encode())
            units[f"stmt {h}"] = h
    return units


def _module_files(root: Path) -> dict[str, Path]:
    out = {}
    for name, mod in list(sys.modules.items()):
        if name != "reprolib" and not name.startswith("reprolib."):
            continue
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        path = Path(f).resolve()
        try:
            rel = path.relative_to(root.resolve()).as_posix()
        except ValueError:   # an installed, non-editable copy: key by its package path
            rel = "reprolib/" + path.as_posix().rsplit("/reprolib/", 1)[-1]
        out[rel] = path
    return dict(sorted(out.items()))


def module_hashes(root: Path | None = None) -> dict[str, dict[str, str]]:
    """{'reprolib/optim/conda.py': {unit: sha}} for every reprolib module imported in this process."""
    return {rel: module_units(path.read_text()) for rel, path in _module_files(root or repo_root()).items()
            if rel != SELF}


def record(slug: str, root: Path | None = None) -> dict:
    root = root or repo_root()
    nb = notebook_path(slug, root)
    return dict(scheme=SCHEME, notebook=notebook_hash(nb) if nb else None,
                notebook_path=nb.relative_to(root).as_posix() if nb else None, modules=module_hashes(root))


def _unit_name(unit: str) -> str:
    return "a top-level statement" if unit.startswith("stmt ") else unit.split(" ", 1)[1]


def stale_reasons(results: dict | None, root: Path | None = None) -> list[str]:
    """Why a rerun would run other code than the recorded run did (empty: up to date)."""
    root = root or repo_root()
    if not results:
        return ["no results.json"]
    if results.get("scale") != "full":
        return [f"results.json is from a {results.get('scale')} run"]
    prov = results.get("provenance")
    if not prov:
        return ["results.json has no provenance record"]
    reasons = []
    nb = notebook_path(results["slug"], root)
    if nb is None:
        return [f"notebook {results['slug']}.ipynb not found"]
    if notebook_hash(nb, prov.get("scheme", 1)) != prov.get("notebook"):
        reasons.append(f"{nb.relative_to(root).as_posix()} code cells changed")
    for rel, recorded in prov.get("modules", {}).items():
        if rel == SELF:
            continue
        path = root / rel
        if not path.exists():
            reasons.append(f"{rel} removed")
        elif isinstance(recorded, str):   # scheme 1: the raw file
            if _sha(path.read_bytes()) != recorded:
                reasons.append(f"{rel} changed")
        else:
            now = module_units(path.read_text(), prov.get("scheme", 1))
            changed = [_unit_name(u) for u, sha in recorded.items() if now.get(u) != sha]
            if changed:
                shown = ", ".join(dict.fromkeys(changed[:3]))
                reasons.append(f"{rel} changed ({shown}{' ...' if len(changed) > 3 else ''})")
    return reasons
