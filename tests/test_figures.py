"""The notebook runner (reprolib/figures.py): packing rules, and a real run of tiny notebooks
through papermill: in place on success, nothing touched on failure, reseed records, skip rule."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reprolib import figures

ROOT = Path(__file__).resolve().parents[1]


def job(name, exclusive=False):
    return figures.Job(Path(f"{name}.ipynb"), "main", exclusive)


def test_packing_rules():
    a, b, c, x, y = job("a"), job("b"), job("c"), job("x", True), job("y", True)
    running = {0: [], 1: []}
    assert figures.pick(0, [0, 1], running, [x, y, a], per_gpu=2) is x   # an empty GPU takes an exclusive job
    running[0] = [x]
    assert figures.pick(0, [0, 1], running, [y, a], per_gpu=2) is None   # nothing joins an exclusive job
    assert figures.pick(1, [0, 1], running, [y, a, b], per_gpu=2) is a   # one GPU held at a time: GPU 1 packs
    running[1] = [a, b]
    assert figures.pick(1, [0, 1], running, [y, c], per_gpu=2) is None   # full
    running = {0: [], 1: [a]}
    assert figures.pick(0, [0, 1], running, [y, b], per_gpu=3) is y      # GPU 0 freed: the next exclusive job
    running = {0: [a]}
    assert figures.pick(0, [0], running, [y, b], per_gpu=3) is None      # one GPU: drain for the exclusive job
    running = {0: []}
    assert figures.pick(0, [0], running, [y, b], per_gpu=3) is y
    running = {0: [a], 1: [b, c]}
    assert figures.pick(0, [0, 1], running, [y, a], per_gpu=3) is None   # GPU 0 has fewest: it drains
    assert figures.pick(1, [0, 1], running, [y, a], per_gpu=3) is a
    assert figures.pick(None, [None], {None: []}, [a], per_gpu=1) is a   # no GPU: one slot


def nb_json(cells, exclusive=False):
    return dict(cells=[dict(cell_type="code", source=src, metadata=dict(tags=tags), outputs=[], execution_count=None)
                       for src, tags in cells],
                metadata=dict(kernelspec=dict(name="python3", display_name="Python 3", language="python"),
                              reprolib=dict(exclusive_gpu=exclusive)),
                nbformat=4, nbformat_minor=5)


GOOD = [("scale = None\nseeds = [0, 1, 2]\ndevice = 'cpu'", ["parameters"]),
        ("from types import SimpleNamespace\nfrom reprolib import Run\n"
         "run = Run('good', dict(id='T1', title='t', arxiv='0000.00000'), scale=scale, seeds=seeds, device=device)\n"
         "run.claim('gain', 'b beats a', 'a - b > 0')\n"
         "t = run.tune('m', lambda lr, s: SimpleNamespace(select_loss=abs(lr - 2e-3)), [1e-3, 2e-3, 4e-3])\n"
         "run.measure(a=[1.5 + 0.01 * (s % 3) for s in run.seeds], b=[1.4 + 0.012 * (s % 3) for s in run.seeds])\n"
         "run.finish()", [])]
BAD = [("scale = None\nseeds = [0, 1, 2]\ndevice = 'cpu'", ["parameters"]), ("raise RuntimeError('boom')", [])]


@pytest.mark.skipif(os.environ.get("REPRO_SKIP_SLOW") == "1", reason="REPRO_SKIP_SLOW")
def test_runner_end_to_end(tmp_path, monkeypatch, capsys):
    (tmp_path / "reprolib").symlink_to(ROOT / "reprolib")   # the modules a run records resolve here too
    good, bad = tmp_path / "notebooks" / "t" / "good.ipynb", tmp_path / "notebooks" / "t" / "bad.ipynb"
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps(nb_json(GOOD)))
    bad.write_text(json.dumps(nb_json(BAD)))
    bad_before = bad.read_bytes()
    monkeypatch.setenv("REPRO_SCALE", "full")
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))
    monkeypatch.delenv("REPRO_OUT", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert figures.main(["--reseed", "--per-gpu", "2"], root=tmp_path) == 1     # bad failed
    out = capsys.readouterr().out
    assert "FAILED bad (main)" in out and "skip   bad (reseed)" in out and "ok     good (reseed)" in out
    res = json.loads((tmp_path / "figures" / "good" / "results.json").read_text())
    reseed_text = (tmp_path / "figures" / "good" / "reseed.json").read_text()
    reseed = json.loads(reseed_text)
    assert reseed_text.count("\n") == 1        # stored compact: it counts against the folder's budget
    assert res["verdict"] == "reproduced" and res["gpu_exclusive"] is False
    assert reseed["seeds"] == [100, 101, 102] and reseed["main_run_id"] == res["run_id"] and reseed["stable"]
    assert reseed["tuning"]["m"]["reused_from_main_run"]
    executed = json.loads(good.read_text())
    assert any("verdict: reproduced" in "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert bad.read_bytes() == bad_before and not (tmp_path / "figures" / "bad").exists()
    assert sorted(p.name for p in good.parent.iterdir()) == ["bad.ipynb", "good.ipynb"]   # nothing left behind
    assert (tmp_path / ".runs" / "main" / "bad.ipynb").exists()                            # the partial run, for reading
    # the good notebook is now up to date: a second call reruns only the failed one
    assert figures.main(["--nb", "good", "--reseed", "--dry-run"], root=tmp_path) == 0
    assert "up to date  good" in capsys.readouterr().out


def test_make_figures_is_the_only_writer_of_figures():
    """No code path but the runner points a run at figures/: the default is an ignored folder."""
    text = (ROOT / "reprolib" / "run" / "harness.py").read_text()
    assert '".runs" if self.full else ".smoke"' in text
    ignored = subprocess.run(["git", "check-ignore", ".runs/x", ".smoke/x"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == [".runs/x", ".smoke/x"]


def test_a_timing_notebooks_reseed_runs_alone(tmp_path, monkeypatch):
    """A timing notebook measures budgets in seconds in its reseed too: it runs alone like its main run."""
    nb = tmp_path / "notebooks" / "t" / "timed.ipynb"
    nb.parent.mkdir(parents=True)
    nb.write_text(json.dumps(nb_json(GOOD, exclusive=True)))
    jobs = []
    monkeypatch.setattr(figures, "schedule", lambda js, *a, **k: jobs.extend(js))
    monkeypatch.setenv("REPRO_SCALE", "full")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    figures.main(["--reseed"], root=tmp_path)
    assert [(j.mode, j.exclusive) for j in jobs] == [("main", True), ("reseed", True)]


def test_never_run_notebooks_start_first_and_a_lease_stops_new_starts(tmp_path, capsys):
    old, new, excl = job("old"), job("new"), job("excl", True)
    new.extra["first"] = True
    assert sorted([old, excl, new], key=figures.priority) == [new, excl, old]
    # --start-within 0: nothing starts, everything stays owed (a reseed waiting on its main too)
    reseed = figures.Job(Path("old.ipynb"), "reseed", after=old)
    figures.schedule([old, reseed], tmp_path, "full", [0], per_gpu=2, start_within_s=0.0)
    assert old.status == "not started" and reseed.status == "not started"
    assert "past --start-within" in capsys.readouterr().out


def test_finish_within_starts_only_what_ends_in_time(tmp_path, monkeypatch, capsys):
    """--finish-within: a long run that would end after the lease is not started (it would be lost), a
    short one still is; a reseed is judged by its main run's wall time once that run has finished."""
    long, short = job("long"), job("short")
    long.estimate_s, short.estimate_s = 900.0, 60.0
    reseed = figures.Job(Path("short.ipynb"), "reseed", after=short, estimate_s=10.0)
    started = []

    class Done:
        def poll(self):
            return 0

    def start(j, *a):
        started.append(j.name)
        j.status, j.proc = "running", Done()

    def finish(j, root):
        j.status = "ok"
        j.extra["wall_s"] = 1000.0 if j is short else 1.0   # the main run took far longer than its estimate

    monkeypatch.setattr(figures, "start", start)
    monkeypatch.setattr(figures, "finish", finish)
    figures.schedule([long, short, reseed], tmp_path, "full", [0], per_gpu=2, finish_within_s=120.0)
    assert started == ["short (main)"]
    assert long.status == "not started" and reseed.status == "not started"   # 0.6 x 1000 s > 120 s
    assert "left of --finish-within" in capsys.readouterr().out
    assert figures.expected_s(reseed) == 600.0


def test_in_order_starts_runs_in_the_order_of_nb(tmp_path, monkeypatch):
    """--in-order: a lease finishes the notebooks named first, reseeds included, before the others,
    even when a later one has never run."""
    for slug, exclusive in (("b_old", False), ("a_new", True)):
        nb = tmp_path / "notebooks" / "t" / f"{slug}.ipynb"
        nb.parent.mkdir(parents=True, exist_ok=True)
        nb.write_text(json.dumps(nb_json(GOOD, exclusive=exclusive)))
    jobs = []
    monkeypatch.setattr(figures, "schedule", lambda js, *a, **k: jobs.extend(js))
    monkeypatch.setenv("REPRO_SCALE", "full")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    figures.main(["--reseed", "--in-order", "--nb", "b_old", "a_new"], root=tmp_path)
    ranked = sorted(jobs, key=figures.priority)
    assert [j.name for j in ranked] == ["b_old (main)", "b_old (reseed)", "a_new (main)", "a_new (reseed)"]
    jobs.clear()
    figures.main(["--reseed", "--nb", "b_old", "a_new"], root=tmp_path)
    assert sorted(jobs, key=figures.priority)[0].name == "a_new (main)"   # exclusive first without it


def test_what_ran_is_settled_again_at_the_end(tmp_path, monkeypatch):
    """A checkout copied over the running one (a GPU lease's next call) can put back an older
    pending.json, notebook and figures mid-run; the runner puts back every successful run's outputs
    and settles it again when all have finished."""
    nb = tmp_path / "notebooks" / "t" / "good.ipynb"
    nb.parent.mkdir(parents=True)
    nb.write_text(json.dumps(nb_json(GOOD)))
    pending = tmp_path / "figures" / "pending.json"
    pending.parent.mkdir()
    owed = json.dumps({"runs": {"good": "first run"}, "reseeds": {"good": "pending"}})
    pending.write_text(owed)

    def schedule(jobs, *a, **k):
        for j in jobs:
            j.status = "ok"
            if j.mode == "main":        # what a finished main run leaves behind
                j.out = tmp_path / ".runs" / "main" / "good.ipynb"
                j.out.parent.mkdir(parents=True)
                j.out.write_text("executed")
                (tmp_path / "figures" / "good").mkdir()
                (tmp_path / "figures" / "good" / "results.json").write_text("{}")
                figures.keep(tmp_path, "good")
        pending.write_text(owed)        # the older copy comes back after the runs settled it
        nb.write_text(json.dumps(nb_json(GOOD)))
        shutil.rmtree(tmp_path / "figures" / "good")

    monkeypatch.setattr(figures, "schedule", schedule)
    monkeypatch.setenv("REPRO_SCALE", "full")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert figures.main(["--reseed"], root=tmp_path) == 0
    assert json.loads(pending.read_text()) == {"runs": {}, "reseeds": {}}
    assert nb.read_text() == "executed" and (tmp_path / "figures" / "good" / "results.json").exists()
