"""Collection checks: every notebook follows the protocol, has a committed full-scale GPU result
with a verdict that follows from its claims, keeps within the size budgets, and the README's
dashboard is generated from those results."""
import json
from pathlib import Path

import pytest

from reprolib import dashboard
from reprolib.run import VERDICTS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in ROOT.glob("notebooks/*/*.ipynb") if not p.name.startswith("."))
KB = 1024


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks under notebooks/<theme>/"


def _cells(nb_path):
    return json.loads(nb_path.read_text())["cells"]


def _text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_protocol(nb_path):
    nb = json.loads(nb_path.read_text())
    cells, slug = nb["cells"], nb_path.stem
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    title = _text(cells[0])
    assert cells[0]["cell_type"] == "markdown" and title.startswith("# ")
    for needle in ("arxiv.org/abs/", "**The claim.**", "**What this notebook reproduces.**"):
        assert needle in title, f"{slug}: title cell lacks {needle!r}"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{slug}: needs exactly one cell tagged 'parameters'"
    for name in ("scale", "seeds", "device"):
        assert f"{name} =" in _text(params[0]), f"{slug}: parameters cell lacks `{name}`"
    code = "\n".join(_text(c) for c in cells if c["cell_type"] == "code")
    markdown = "\n".join(_text(c) for c in cells if c["cell_type"] == "markdown")
    assert f'Run("{slug}"' in code, f"{slug}: the Run harness must be created with the notebook's slug"
    assert "run.claim(" in code and "run.finish()" in code
    assert code.index("run.claim(") < code.index("run.measure("), f"{slug}: claims must be registered before measuring"
    assert "show_source(" in code, f"{slug}: show the library's method with show_source, not a copy"
    for heading in ("## Discussion", "## Summary", "## Exercises"):
        assert heading in markdown, f"{slug}: missing {heading!r}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_with_full_gpu_outputs(nb_path):
    cells = _cells(nb_path)
    outputs = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert f"{nb_path.stem} | scale=full" in outputs, f"{nb_path.stem}: commit the notebook with its full-scale run"
    assert "device=cuda" in outputs, f"{nb_path.stem}: the committed run did not use a GPU"
    assert "verdict: " in outputs
    assert nb_path.stat().st_size < 400 * KB, f"{nb_path.stem}: notebook over the 400 KB budget"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_results_json(nb_path):
    out_dir = ROOT / "figures" / nb_path.stem
    res = json.loads((out_dir / "results.json").read_text())
    assert res["slug"] == nb_path.stem and res["scale"] == "full"
    assert "cuda" in res["device"], "full-scale results must come from a GPU"
    assert res["claims"] and all(isinstance(c["passed"], bool) and c["criterion"] for c in res["claims"])
    passed = [c["passed"] for c in res["claims"]]
    expected = VERDICTS[0] if all(passed) else VERDICTS[1] if any(passed) else VERDICTS[2]
    assert res["verdict"] == expected, "the verdict must follow from the claims"
    for key in ("paper", "seeds", "versions", "wall_time_s", "source_hash"):
        assert key in res
    assert len(res["seeds"]) >= 3, "full runs report medians over at least three seeds"
    for fig in res["figures"]:
        assert (out_dir / f"{fig}.png").exists()
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    assert size < 400 * KB, f"figures/{nb_path.stem} is {size / KB:.0f} KB (budget 400)"


def test_no_stray_figure_folders():
    slugs = {p.stem for p in NOTEBOOKS}
    stray = [d.name for d in (ROOT / "figures").iterdir()
             if d.is_dir() and d.name not in slugs and not d.name.startswith("_")]  # _bench: make bench
    assert not stray, f"figures/ folders without a notebook: {stray}"


def test_dashboard_is_current():
    old, new = dashboard.updated_readme(ROOT)
    assert old == new, "README.md's results table is stale: run `make dashboard`"
