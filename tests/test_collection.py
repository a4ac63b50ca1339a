"""Collection checks: every notebook follows the protocol, has a committed full-scale GPU result
whose verdict follows from its claims under the harness's rules, whose code matches the committed
notebook, with a current reseed record and its figures shown inline; sizes stay within budget;
shipped files stand alone; the README's dashboard is generated from the results."""
import json
import re
import warnings
from pathlib import Path

import pytest

from reprolib import dashboard
from reprolib.run import KINDS, VERDICTS, notebook_hash, stale_reasons
from reprolib.run import claims as C

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in ROOT.glob("notebooks/*/*.ipynb") if not p.name.startswith("."))
KB = 1024
PENDING_PATH = ROOT / "figures" / "pending.json"
PENDING = json.loads(PENDING_PATH.read_text()) if PENDING_PATH.exists() else {"runs": {}, "reseeds": {}}


def owed_run(nb_path):
    """A notebook revised for the current protocol whose full-scale run is still owed: its
    committed-run checks wait (test_pending_list_is_honest checks the list itself)."""
    why = PENDING["runs"].get(nb_path.stem)
    if why:
        pytest.skip(f"{nb_path.stem}: full-scale run pending ({why})")


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks under notebooks/<theme>/"


def _text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _results(nb_path, name="results.json"):
    path = ROOT / "figures" / nb_path.stem / name
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_protocol(nb_path):
    nb = json.loads(nb_path.read_text())
    cells, slug = nb["cells"], nb_path.stem
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    title = _text(cells[0])
    assert cells[0]["cell_type"] == "markdown" and title.startswith("# ")
    for needle in ("**The claim.**", "**What this notebook reproduces.**"):
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
    assert "tune_then_repeat" not in code, f"{slug}: tune with run.tune (unreported seeds, selection split, edges)"
    assert "show_source(" in code, f"{slug}: show the library's method with show_source, not a copy"
    for heading in ("## Discussion", "## Summary", "## Exercises"):
        assert heading in markdown, f"{slug}: missing {heading!r}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_hint_and_a_worked_solution(nb_path):
    markdown = "\n".join(_text(c) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "markdown")
    exercises = markdown.split("## Exercises", 1)[1]
    n = len(re.findall(r"^\d+\. ", exercises, re.M))
    hints = exercises.count("<summary>Hint</summary>")
    solutions = exercises.count("<summary>Worked solution</summary>")
    assert n >= 2 and hints == n and solutions == n, f"{nb_path.stem}: {n} exercises, {hints} hints, {solutions} solutions"
    assert exercises.count("<details>") == exercises.count("</details>")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_smoke_run_within_budget(nb_path):
    """figures/_smoke/times.json (make smoke-times) records each notebook's smoke compute on 2 CPU cores."""
    times = json.loads((ROOT / "figures" / "_smoke" / "times.json").read_text())["notebooks"]
    assert nb_path.stem in times, f"{nb_path.stem}: no recorded smoke time (make smoke-times)"
    assert times[nb_path.stem] <= 15, f"{nb_path.stem}: smoke run took {times[nb_path.stem]} s (budget 15 s)"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_with_full_gpu_outputs_and_inline_figures(nb_path):
    owed_run(nb_path)
    cells = json.loads(nb_path.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    text = "".join("".join(o["text"]) if isinstance(o.get("text"), list) else o.get("text", "") for o in outputs)
    assert f"{nb_path.stem} | scale=full" in text, f"{nb_path.stem}: commit the notebook with its full-scale run"
    assert "device=cuda" in text, f"{nb_path.stem}: the committed run did not use a GPU"
    assert "verdict: " in text and "| reseed" not in text, f"{nb_path.stem}: commit the main run, not a reseed run"
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    res = _results(nb_path)
    assert images >= max(1, len(res["figures"]) if res else 1), f"{nb_path.stem}: figures are not shown inline"
    assert nb_path.stat().st_size < 400 * KB, f"{nb_path.stem}: notebook over the 400 KB budget"


def expected_verdict(res):
    return C.verdict([c["outcome"] for c in res["claims"] if c["kind"] == "headline"])


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_results_json(nb_path):
    owed_run(nb_path)
    out_dir = ROOT / "figures" / nb_path.stem
    res = _results(nb_path)
    assert res is not None, f"{nb_path.stem}: no committed results.json (make figures NB={nb_path.stem})"
    assert res["slug"] == nb_path.stem and res["scale"] == "full"
    assert "cuda" in res["device"], "full-scale results must come from a GPU"
    assert res["claims"] and all(c["kind"] in KINDS and c["outcome"] in (C.PASS, C.FAIL, C.UNCLEAR)
                                 for c in res["claims"])
    assert any(c["kind"] == "headline" for c in res["claims"])
    for c in res["claims"]:
        gated = [r for r in res["regimes"] if r["passed"] is False
                 and (c["name"] in (r["gates"] or []) or (r["gates"] is None and c["kind"] == "headline"))]
        if gated:
            assert c["outcome"] == C.UNCLEAR, f"{c['name']}: a failed regime check must make it inconclusive"
        if c["timing"]:
            assert c["counts"], f"{c['name']}: a timing claim records hardware-independent counts"
    assert res["verdict"] == expected_verdict(res) and res["verdict"] in VERDICTS
    for key in ("paper", "seeds", "tune_seeds", "versions", "wall_time_s", "provenance", "run_id", "parameters"):
        assert key in res
    assert not set(res["seeds"]) & set(res["tune_seeds"]), "tuning seeds are never reported"
    assert len(res["seeds"]) >= 3, "full runs report medians over at least three seeds"
    for fig in res["figures"]:
        assert (out_dir / f"{fig}.png").exists()
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    assert size < 400 * KB, f"figures/{nb_path.stem} is {size / KB:.0f} KB (budget 400)"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_code_is_the_code_that_ran(nb_path):
    owed_run(nb_path)
    res = _results(nb_path)
    assert res["provenance"]["notebook"] == notebook_hash(nb_path, res["provenance"].get("scheme", 1)), \
        f"{nb_path.stem}: code cells changed after the committed run; rerun it (make figures NB={nb_path.stem})"
    lib = [r for r in stale_reasons(res, ROOT) if not r.endswith("code cells changed")]
    if lib:
        warnings.warn(f"{nb_path.stem}: library changed since its run ({'; '.join(lib[:3])}); make figures reruns it")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_reseed_record_is_current(nb_path):
    owed_run(nb_path)
    if nb_path.stem in PENDING["reseeds"]:
        pytest.skip(f"{nb_path.stem}: reseed check pending")
    res, reseed = _results(nb_path), _results(nb_path, "reseed.json")
    assert reseed is not None, f"{nb_path.stem}: no reseed check (make reseed NB={nb_path.stem})"
    assert reseed["main_run_id"] == res["run_id"], f"{nb_path.stem}: the reseed record is for an older run"
    assert not set(reseed["seeds"]) & set(res["seeds"])
    assert reseed["stable"] == (reseed["verdict"] == res["verdict"])


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_timing_notebooks_ask_for_a_gpu_of_their_own(nb_path):
    nb = json.loads(nb_path.read_text())
    code = "\n".join(_text(c) for c in nb["cells"] if c["cell_type"] == "code")
    if "timing=True" in code:
        assert nb["metadata"].get("reprolib", {}).get("exclusive_gpu"), \
            f"{nb_path.stem} has timing claims: set metadata reprolib.exclusive_gpu = true"


def test_pending_list_is_honest():
    """The list of owed runs names real notebooks; a notebook is listed only while its committed
    result does not match its code; a listed notebook shows no outputs of an older run; and an owed
    run is owed for its reseed check too. The README table shows every pending entry."""
    slugs = {p.stem: p for p in NOTEBOOKS}
    assert set(PENDING) >= {"runs", "reseeds"}
    for slug in [*PENDING["runs"], *PENDING["reseeds"]]:
        assert slug in slugs, f"figures/pending.json names {slug!r}, which is not a notebook"
    for slug in PENDING["runs"]:
        res = _results(slugs[slug])
        assert stale_reasons(res, ROOT), f"{slug}: its result matches its code: remove it from pending runs"
        cells = json.loads(slugs[slug].read_text())["cells"]
        text = json.dumps([c.get("outputs", []) for c in cells])
        assert "verdict: " not in text and "scale=full" not in text, f"{slug}: clear the outputs of the older run"
        assert slug in PENDING["reseeds"], f"{slug}: an owed run owes its reseed check too"
    table = dashboard.render(ROOT)
    assert table.count("**pending rerun**") + table.count("**pending first run**") == len(PENDING["runs"])


OUTSIDE = re.compile(r"\.\./shared|shared/(papers|tools)|\bthe design\b|\bissue\s*#?\d+|\bthe issue\b", re.I)
SHIPPED = [*NOTEBOOKS, ROOT / "README.md", *sorted((ROOT / "reprolib").rglob("*.py"))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_files_stand_alone(path):
    if path.suffix == ".ipynb":   # the reader's text and code, not the outputs
        text = "\n".join(_text(c) for c in json.loads(path.read_text())["cells"])
    else:
        text = path.read_text()
    hits = sorted({m.group(0) for m in OUTSIDE.finditer(text)})
    assert not hits, f"{path.name} refers to files or issues a reader does not have: {hits}"


def test_no_stray_figure_folders():
    slugs = {p.stem for p in NOTEBOOKS}
    stray = [d.name for d in (ROOT / "figures").iterdir()
             if d.is_dir() and d.name not in slugs and not d.name.startswith("_")]  # _bench: make bench
    assert not stray, f"figures/ folders without a notebook: {stray}"
    left = sorted(p.name for p in ROOT.glob("notebooks/**/.*.ipynb"))
    assert not left, f"files left in notebooks/ by an interrupted run: {left}"


def test_dashboard_is_current():
    old, new = dashboard.updated_readme(ROOT)
    assert old == new, "README.md's results table is stale: run `make dashboard`"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_knob_replaced_at_smoke_says_so_at_the_knob(nb_path):
    """A parameter that reaches `full=` of a run.pick is replaced by a smoke size at smoke scale: its
    line in the parameters cell says so (the run also warns when it was changed)."""
    import ast
    cells = json.loads(nb_path.read_text())["cells"]
    params = next(_text(c) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = {}
    for node in ast.parse(params).body:
        if isinstance(node, ast.Assign):
            text = "\n".join(params.splitlines()[node.lineno - 1:node.end_lineno])
            nxt = params.splitlines()[node.end_lineno:node.end_lineno + 2]   # wrapped '#   ...' comment lines
            text += "\n" + "\n".join(x for x in nxt if x.lstrip().startswith("#"))
            lines.update({t.id: text for t in node.targets if isinstance(t, ast.Name)})
    code = "\n".join(_text(c) for c in cells if c["cell_type"] == "code" and not c["source"] == params)
    replaced = set()
    for node in ast.walk(ast.parse("\n".join(ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "pick":
            for kw in node.keywords:
                if kw.arg == "full":
                    replaced |= {n.id for n in ast.walk(kw.value) if isinstance(n, ast.Name)} & set(lines)
    silent = sorted(n for n in replaced - {"scale", "seeds", "device"} if "smoke" not in lines[n])
    assert not silent, f"{nb_path.stem}: say at these knobs what smoke scale uses instead: {silent}"


def test_no_export_table_names_a_module_twice():
    """A package's `_EXPORTS` is a dict literal: a module named twice (two branches each adding an entry)
    silently keeps only the later entry, and the names of the earlier one vanish."""
    import ast
    for init in sorted((ROOT / "reprolib").rglob("__init__.py")):
        for node in ast.parse(init.read_text()).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_EXPORTS":
                table = node.value.args[0] if isinstance(node.value, ast.Call) else node.value
                keys = [ast.literal_eval(k) for k in table.keys]
                assert len(keys) == len(set(keys)), f"{init.relative_to(ROOT)}: {sorted({k for k in keys if keys.count(k) > 1})}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tuning_seeds_never_meet_the_reseed_seeds(nb_path):
    """Tuning seeds written into `Run(..., tune_seeds=[...])` stay off the reported seeds and off the
    reseed check's seeds (reported + RESEED_OFFSET): a clash stops the check at its first cell."""
    import ast
    from reprolib.figures import RESEED_OFFSET
    cells = json.loads(nb_path.read_text())["cells"]
    params = next(_text(c) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    scope = {}
    exec(params, scope)   # the parameters cell is plain assignments (`seeds = list(range(10))` too)
    seeds = scope["seeds"]
    code = "\n".join(_text(c) for c in cells if c["cell_type"] == "code")
    for node in ast.walk(ast.parse("\n".join(ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Run":
            for kw in node.keywords:
                if kw.arg == "tune_seeds":
                    try:
                        tune = set(ast.literal_eval(kw.value))
                    except ValueError:
                        continue   # computed from seeds: Run itself refuses an overlap with the reported seeds
                    taken = set(seeds) | {s + RESEED_OFFSET for s in seeds}
                    assert not tune & taken, \
                        f"{nb_path.stem}: tuning seeds {sorted(tune & taken)} are reported or reseed-check seeds"
