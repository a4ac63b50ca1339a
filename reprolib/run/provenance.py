"""Provenance: which code a result came from, and whether a rerun would run the same code.

results.json records the sha256 of the notebook's code cells (not markdown, not outputs, not the
cell papermill injects) and of every reprolib module the run imported. A result is stale when
either changed; `stale_reasons` names the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


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


def notebook_hash(path: Path) -> str:
    return _sha("\n\x00".join(code_cells(json.loads(Path(path).read_text()))).encode())


def module_hashes(root: Path | None = None) -> dict[str, str]:
    """{'reprolib/optim/conda.py': sha} for every reprolib module imported in this process."""
    root = root or repo_root()
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
        out[rel] = _sha(path.read_bytes())
    return dict(sorted(out.items()))


def record(slug: str, root: Path | None = None) -> dict:
    root = root or repo_root()
    nb = notebook_path(slug, root)
    return dict(notebook=notebook_hash(nb) if nb else None,
                notebook_path=nb.relative_to(root).as_posix() if nb else None, modules=module_hashes(root))


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
    if notebook_hash(nb) != prov.get("notebook"):
        reasons.append(f"{nb.relative_to(root).as_posix()} code cells changed")
    for rel, sha in prov.get("modules", {}).items():
        path = root / rel
        if not path.exists():
            reasons.append(f"{rel} removed")
        elif _sha(path.read_bytes()) != sha:
            reasons.append(f"{rel} changed")
    return reasons
