"""The harness (reprolib/run/harness.py): scales, seeds, claims and regime checks through a run,
the tuning protocol, reseed records, timing claims and where results go."""
import json
import math
import warnings
from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reprolib.run import Run, resolve_device, resolve_scale  # noqa: E402

PAPER = dict(id="P000", title="A test paper", arxiv="0000.00000")


def make_run(tmp_path, scale="full", **kw):
    kw.setdefault("device", "cpu")
    if scale == "full" and not torch.cuda.is_available():
        with pytest.warns(UserWarning):
            return Run("test_slug", PAPER, scale=scale, out_dir=tmp_path, **kw)
    return Run("test_slug", PAPER, scale=scale, out_dir=tmp_path, **kw)


def test_scale_from_env(monkeypatch):
    monkeypatch.setenv("REPRO_SCALE", "smoke")
    assert resolve_scale(None) == "smoke"
    assert resolve_scale("full") == "full"
    monkeypatch.delenv("REPRO_SCALE")
    assert resolve_scale(None) == "full"


def test_bad_parameters_name_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="valid scales"):
        Run("x", PAPER, scale="medium", out_dir=tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        Run("x", PAPER, scale="smoke", seeds=[], out_dir=tmp_path)
    with pytest.raises(ValueError, match="overlap"):
        Run("x", PAPER, scale="smoke", seeds=[0, 1000], tune_seeds=[1000], out_dir=tmp_path)
    with pytest.raises(ValueError, match="arxiv"):
        Run("x", dict(id="X", title="t"), scale="smoke", out_dir=tmp_path)
    with pytest.raises(ValueError, match="valid"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_smoke_uses_one_seed_and_is_deterministic(tmp_path):
    run = make_run(tmp_path, scale="smoke", seeds=[3, 4, 5])
    assert run.seeds == [3] and run.tune_seeds == [1003] and run.pick(smoke=1, full=2) == 1
    a = torch.randn(4, generator=run.seed(3))
    b = torch.randn(4, generator=run.seed(3))
    assert torch.equal(a, b)


def test_results_json_records_claims_regimes_and_comparisons(tmp_path):
    run = make_run(tmp_path, seeds=[0, 1, 2])
    run.claim("gain", "B ends below A", "a - b > 0")
    run.claim("state", "B keeps no state", "state_bytes == 0", kind="property")
    run.regime("trained", "A beats the unigram loss", "a < 2.0")
    with pytest.raises(SyntaxError):
        run.claim("bad", "typo", "x <=")
    with pytest.raises(ValueError, match="kind"):
        run.claim("k", "k", "x > 0", kind="main")
    run.measure(a=[1.50, 1.52, 1.49], b=[1.40, 1.43, 1.38], state_bytes=0)
    with pytest.raises(RuntimeError, match="before"):
        run.claim("late", "too late", "x > 0")
    with pytest.raises(RuntimeError, match="before"):
        run.regime("late", "too late", "x > 0")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    run.savefig(fig, "curve")
    res = run.finish()
    assert res["verdict"] == "reproduced"
    on_disk = json.loads((tmp_path / "test_slug" / "results.json").read_text())
    gain = on_disk["claims"][0]
    assert gain["kind"] == "headline" and gain["outcome"] == "pass" and gain["measured"]["a"] == [1.50, 1.52, 1.49]
    assert gain["comparisons"][0]["n"] == 3 and gain["comparisons"][0]["diff"] == pytest.approx(0.1)
    assert on_disk["regimes"][0]["passed"] is True
    assert on_disk["seeds"] == [0, 1, 2] and on_disk["tune_seeds"] == [1000]
    assert (tmp_path / "test_slug" / "curve.png").exists() and (tmp_path / "test_slug" / "curve.pdf").exists()
    for key in ("device", "versions", "wall_time_s", "provenance", "run_id", "paper", "parameters", "tuning"):
        assert key in on_disk
    assert "reprolib/run/claims.py" in on_disk["provenance"]["modules"]


def test_only_headline_claims_make_the_verdict(tmp_path, capsys):
    run = make_run(tmp_path)
    run.claim("head", "the paper's claim", "x < 1")
    run.claim("side", "a supporting claim", "y < 1", kind="supporting")
    run.claim("inv", "an invariant", "z == 0", kind="property")
    run.measure(x=0.5, y=2.0, z=1)
    res = run.finish()
    assert res["verdict"] == "reproduced"      # the failed supporting and property checks are reported beside it
    assert [c["outcome"] for c in res["claims"]] == ["pass", "fail", "fail"]
    assert "claim side [supporting]: FAIL" in capsys.readouterr().out


def test_no_headline_claim_is_an_error(tmp_path):
    run = make_run(tmp_path, scale="smoke")
    run.claim("inv", "an invariant", "z == 0", kind="property")
    run.measure(z=0)
    with pytest.raises(RuntimeError, match="headline"):
        run.finish()


@pytest.mark.parametrize("x,y,verdict", [
    ([0.5, 0.52, 0.48], [0.1, 0.12, 0.09], "reproduced"),
    ([2.0, 2.1, 1.9], [0.9, 0.95, 0.85], "not reproduced"),
    ([0.5, 0.52, 0.48], [0.9, 0.95, 0.85], "partially reproduced"),
    ([0.5, 1.6, 0.7], [0.1, 1.2, 0.9], "inconclusive"),           # both straddle their thresholds
])
def test_one_run_per_verdict_level(tmp_path, x, y, verdict):
    run = make_run(tmp_path)
    run.claim("a", "a", "x < 1.0")
    run.claim("b", "b", "y < 0.5")
    run.measure(x=x, y=y)
    assert run.finish()["verdict"] == verdict


def test_a_failed_regime_check_makes_the_verdict_inconclusive_not_a_refutation(tmp_path, capsys):
    run = make_run(tmp_path)
    run.claim("gain", "B beats A", "a - b > 0")
    run.regime("baseline_trained", "A beats the unigram loss on every seed", "a < unigram")
    run.measure(a=[3.0, 3.1, 3.05], b=[3.2, 3.3, 3.25], unigram=2.9)   # the claim would fail
    res = run.finish()
    assert res["verdict"] == "inconclusive"
    assert res["claims"][0]["outcome"] == "inconclusive" and "baseline_trained failed (measured: fail)" in res["claims"][0]["note"]
    assert "regime baseline_trained: NOT REACHED" in capsys.readouterr().out


def test_a_regime_check_gates_only_the_claims_it_names(tmp_path):
    run = make_run(tmp_path)
    run.claim("small", "at small batch", "s < 1")
    run.claim("large", "at large batch", "l < 1")
    run.regime("large_batch_steps", "enough steps at the large batch", "large_steps >= 500", gates=["large"])
    run.measure(s=[0.1, 0.2, 0.15], l=[0.1, 0.2, 0.15], large_steps=50)
    res = run.finish()
    assert [c["outcome"] for c in res["claims"]] == ["pass", "inconclusive"]
    assert res["verdict"] == "partially reproduced"


def history(select, val=None):
    return SimpleNamespace(select_loss=select, val_loss=[val if val is not None else select])


def test_tuning_uses_unreported_seeds_and_the_selection_split(tmp_path):
    calls = []

    def fn(lr, seed):
        calls.append((lr, seed))
        # selection split: best at 2e-3; the reported split would pick 1e-3
        return history(abs(math.log2(lr / 2e-3)), val=abs(math.log2(lr / 1e-3)))

    run = make_run(tmp_path, seeds=[0, 1, 2])
    t = run.tune("adamw", fn, [1e-3, 2e-3, 4e-3])
    assert t.best_lr == 2e-3 and not t.extended and not t.on_edge
    assert [s for _, s in calls[:3]] == [1000] * 3           # the grid ran on the tuning seed only
    assert calls[3:] == [(2e-3, 0), (2e-3, 1), (2e-3, 2)]     # then the reported seeds at the chosen lr
    assert all(r is not t.sweep[2e-3] for r in t.runs)       # no tuning run is reported
    with pytest.raises(ValueError, match="selection split"):
        run.tune("bad", lambda lr, seed: SimpleNamespace(val_loss=[1.0]), [1e-3, 2e-3])


def test_a_grid_edge_optimum_gets_extended(tmp_path):
    """The optimum (1e-4) lies below the grid [4e-4, 8e-4, 1.6e-3]: two extensions by the grid's
    ratio reach it and the search stops once the best lr is interior."""
    calls = []

    def fn(lr, seed):
        calls.append((lr, seed))
        return history(abs(math.log2(lr / 1e-4)))

    run = make_run(tmp_path, seeds=[0, 1])
    t = run.tune("muon", fn, [8e-4, 4e-4, 1.6e-3], extend=5)
    assert t.best_lr == pytest.approx(1e-4) and len(t.extended) == 3    # 2e-4, 1e-4, 5e-5
    assert t.extended == pytest.approx([2e-4, 1e-4, 5e-5]) and not t.on_edge
    assert list(t.sweep) == sorted(t.sweep) and len(t.sweep) == 6
    run.claim("c", "c", "x < 1")
    run.measure(x=[0.5, 0.5])
    res = run.finish()
    rec = res["tuning"]["muon"]
    assert rec["extended"] == pytest.approx([2e-4, 1e-4, 5e-5]) and rec["grid"] == [4e-4, 8e-4, 1.6e-3]
    assert res["regimes"][0]["name"] == "muon_lr_inside_grid" and res["regimes"][0]["passed"] is True
    assert res["verdict"] == "reproduced"


def test_an_lr_still_on_the_edge_makes_the_verdict_inconclusive(tmp_path):
    run = make_run(tmp_path, seeds=[0, 1])
    t = run.tune("adamw", lambda lr, seed: history(1 / lr), [1e-3, 2e-3], extend=1)   # higher is always better
    assert t.on_edge and t.best_lr == pytest.approx(4e-3)
    run.claim("c", "c", "x < 1")
    run.measure(x=[0.5, 0.5])
    res = run.finish()
    assert res["regimes"][0]["passed"] is False and res["verdict"] == "inconclusive"


def test_a_diverged_lr_never_wins_and_one_lr_is_not_extended(tmp_path):
    run = make_run(tmp_path, seeds=[0])
    t = run.tune("a", lambda lr, seed: history(float("nan") if lr > 1e-2 else 1 / lr), [1e-3, 1e-2, 1e-1])
    assert t.best_lr == 1e-2 and not t.on_edge
    t1 = run.tune("b", lambda lr, seed: history(1.0), [1e-3])
    assert t1.best_lr == 1e-3 and not t1.extended and "b_lr_inside_grid" not in run.regimes


def test_timing_claims_need_counts_and_a_gpu_to_themselves(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    with pytest.raises(ValueError, match="counts"):
        run.claim("fast", "fast", "t_ratio <= 0.5", timing=True)
    monkeypatch.setenv("REPRO_GPU_EXCLUSIVE", "0")
    run = make_run(tmp_path)
    run.claim("fast", "A's step takes at most half B's time", "t_ratio <= 0.5", timing=True, counts=["flop_ratio"])
    run.claim("acc", "accuracy kept", "acc > 0.5")
    run.measure(t_ratio=0.3, acc=0.9)
    with pytest.raises(KeyError, match="flop_ratio"):
        run.finish()
    run.record(flop_ratio=0.2)
    res = run.finish()
    assert res["claims"][0]["outcome"] == "inconclusive" and "shared" in res["claims"][0]["note"]
    assert res["verdict"] == "partially reproduced" and res["gpu_exclusive"] is False


def main_run(tmp_path, monkeypatch, a, b):
    run = make_run(tmp_path, seeds=[0, 1, 2])
    t = run.tune("m", lambda lr, seed: history(abs(math.log2(lr / 2e-3))), [1e-3, 2e-3, 4e-3])
    run.claim("gain", "B beats A", "a - b > 0")
    run.claim("fast", "fast", "t <= 1", timing=True, counts=["n"])
    run.measure(a=a, b=b, t=0.5, n=1)
    return run.finish(), t


def test_reseed_reuses_tuning_and_records_stability(tmp_path, monkeypatch):
    main, _ = main_run(tmp_path, monkeypatch, a=[1.5, 1.52, 1.49], b=[1.4, 1.43, 1.38])
    monkeypatch.setenv("REPRO_RESEED_FROM", str(tmp_path / "test_slug" / "results.json"))
    monkeypatch.setenv("REPRO_GPU_EXCLUSIVE", "0")
    with pytest.raises(ValueError, match="disjoint"):
        make_run(tmp_path, seeds=[2, 3, 4])
    run = make_run(tmp_path, seeds=[100, 101, 102])
    calls = []
    t = run.tune("m", lambda lr, seed: calls.append((lr, seed)) or history(1.0), [1e-3, 2e-3, 4e-3])
    assert t.reused and t.best_lr == 2e-3 and calls == [(2e-3, 100), (2e-3, 101), (2e-3, 102)]
    run.claim("gain", "B beats A", "a - b > 0")
    run.claim("fast", "fast", "t <= 1", timing=True, counts=["n"])
    run.measure(a=[1.5, 1.4, 1.6], b=[1.48, 1.45, 1.55], t=9.0, n=1)   # the gain is now inside the noise
    rec = run.finish()
    assert rec["verdict"] == "partially reproduced" and rec["main_verdict"] == "reproduced" and not rec["stable"]
    assert rec["main_run_id"] == main["run_id"]
    by = {c["name"]: c for c in rec["claims_compared"]}
    assert by["gain"]["main"] == "pass" and by["gain"]["reseed"] == "inconclusive" and not by["gain"]["holds"]
    assert by["fast"]["holds"] and "carried" in by["fast"]["note"]   # timing: the hardware, not the seed
    assert json.loads((tmp_path / "test_slug" / "results.json").read_text())["run_id"] == main["run_id"]
    assert (tmp_path / "test_slug" / "reseed.json").exists()


def test_results_go_to_an_ignored_folder_unless_the_runner_says_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))
    monkeypatch.delenv("REPRO_OUT", raising=False)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _null():
        run = Run("s", PAPER, scale="full", device="cpu")
    assert run.out_dir == tmp_path / ".runs" / "s"
    assert Run("s", PAPER, scale="smoke", device="cpu").out_dir == tmp_path / ".smoke" / "s"
    monkeypatch.setenv("REPRO_OUT", str(tmp_path / "figures"))
    assert Run("s", PAPER, scale="smoke", device="cpu").out_dir == tmp_path / "figures" / "s"


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_failed_run_leaves_old_figures(tmp_path):
    out = tmp_path / "test_slug"
    out.mkdir()
    (out / "curve.png").write_bytes(b"old")
    run = make_run(tmp_path)
    fig, ax = plt.subplots()
    run.savefig(fig, "curve")
    # the notebook dies here: finish() never runs
    assert (out / "curve.png").read_bytes() == b"old"


def test_nan_and_inf_serialise(tmp_path):
    run = make_run(tmp_path)
    run.claim("a", "a", "r <= 0.75")
    run.measure(r=float("nan"))
    run.record(t=float("inf"))
    assert run.finish()["verdict"] == "not reproduced"
    assert json.loads((tmp_path / "test_slug" / "results.json").read_text())["records"]["t"] == "inf"


def test_smoke_reports_not_evaluated(tmp_path, capsys):
    run = make_run(tmp_path, scale="smoke")
    run.claim("a", "a", "x < 1")
    run.measure(x=0.0)
    res = run.finish()
    assert res["verdict"] == "not evaluated (smoke)" and res["claims"][0]["outcome"] is None
    assert "claim a [headline]: not evaluated at smoke scale" in capsys.readouterr().out


def test_missing_measurement_is_an_error(tmp_path):
    run = make_run(tmp_path, scale="smoke")
    run.claim("a", "a", "x < 1")
    with pytest.raises(KeyError, match="x"):
        run.finish()


def test_grid_extensions_list_what_tune_may_add(tmp_path):
    from reprolib.run import grid_extensions
    below, above = grid_extensions([4e-4, 8e-4, 1.6e-3], extend=2)
    assert below == pytest.approx([2e-4, 1e-4]) and above == pytest.approx([3.2e-3, 6.4e-3])
    assert grid_extensions([1e-3]) == ([], [])
    run = make_run(tmp_path, seeds=[0])
    t = run.tune("k", lambda lr, seed: history(abs(math.log2(lr / 6.4e-3))), [4e-4, 8e-4, 1.6e-3], extend=2)
    assert t.extended == pytest.approx(above) and t.best_lr == pytest.approx(6.4e-3) and t.on_edge


def _params_notebook(tmp_path, monkeypatch):
    """A notebook whose parameters cell declares a few knobs of each kind, found through REPRO_ROOT."""
    nb = tmp_path / "notebooks" / "t" / "test_slug.ipynb"
    nb.parent.mkdir(parents=True)
    src = ("scale = None\nseeds = [0, 1, 2]\ndevice = 'auto'\nsteps = 600\nlr = 1e-3\nlrs = dict(adamw=[1e-3, 2e-3])\n"
           "use_bf16 = True\nwidths = [32, 64]\n")
    nb.write_text(json.dumps(dict(cells=[dict(cell_type="code", source=src, metadata=dict(tags=["parameters"]),
                                              outputs=[], execution_count=None)], metadata={}, nbformat=4,
                                  nbformat_minor=5)))
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))
    return nb


def _run_as_papermill(tmp_path, injected: str, body: str = ""):
    """Run the notebook's parameters cell, papermill's injected cell, then Run(...) in one namespace
    whose IPython history `In` holds both cells, as a kernel under papermill has it."""
    params = "scale = 'smoke'\nseeds = [0, 1, 2]\ndevice = 'cpu'\nsteps = 600\nlr = 1e-3\n" \
             "lrs = dict(adamw=[1e-3, 2e-3])\nuse_bf16 = True\nwidths = [32, 64]\n"
    cell = "# Parameters\n" + injected
    ns = {"In": ["", params, cell], "Run": Run, "PAPER": PAPER, "out": tmp_path / "out"}
    exec(params, ns)
    exec(cell, ns)
    exec("run = Run('test_slug', PAPER, scale=scale, seeds=seeds, device=device, out_dir=out)\n" + body, ns)
    return ns


def test_a_misspelled_parameter_stops_the_run_with_a_suggestion(tmp_path, monkeypatch):
    _params_notebook(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=r"unknown parameter 'stpes': did you mean 'steps'\?.*-p steps 600"):
        _run_as_papermill(tmp_path, "stpes = 100\n")


@pytest.mark.parametrize("injected, match", [
    ("seeds = '[1]'\n", r"seeds must be a list like \[0, 1, 2\], got a string '\[1\]' \(papermill's -p passes text"
                        r".*-y 'seeds: \[0, 1, 2\]'"),
    ("steps = 1.5\n", r"steps must be an int like 600, got a number 1.5"),
    ("use_bf16 = 1\n", r"use_bf16 must be a bool"),
    ("widths = [32, 'x']\n", r"widths\[1\] must be an int"),
    ("lrs = {'adamw': [1e-3], 'adam': [1e-3]}\n", r"lrs has no key 'adam'"),
    ("lr = 'fast'\n", r"lr must be a number"),
])
def test_an_ill_typed_parameter_stops_the_run_naming_it(tmp_path, monkeypatch, injected, match):
    _params_notebook(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=match):
        _run_as_papermill(tmp_path, injected)


def test_well_typed_parameters_pass_and_ints_stand_for_floats(tmp_path, monkeypatch):
    _params_notebook(tmp_path, monkeypatch)
    ns = _run_as_papermill(tmp_path, "steps = 100\nlr = 1\nseeds = [5]\nlrs = {'adamw': [3e-3]}\n")
    assert ns["run"].parameters["steps"] == 100 and ns["run"].seeds == [5]


def test_smoke_warns_when_its_sizes_replace_a_changed_parameter(tmp_path, monkeypatch):
    _params_notebook(tmp_path, monkeypatch)
    with pytest.warns(UserWarning, match=r"parameter steps=1234 takes effect at full scale only.*\(12\)"):
        ns = _run_as_papermill(tmp_path, "steps = 1234\n", "n = run.pick(smoke=12, full=steps)\n"
                                                           "m = run.pick(smoke=(1, 2), full=(steps, lr))\n")
    assert ns["n"] == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # an unchanged parameter, or none at all, draws no warning
        _run_as_papermill(tmp_path, "", "n = run.pick(smoke=12, full=steps)\n")


def test_outside_papermill_nothing_is_injected_or_checked(tmp_path, monkeypatch):
    _params_notebook(tmp_path, monkeypatch)
    ns = {"Run": Run, "PAPER": PAPER, "out": tmp_path / "out", "stpes": 5}
    exec("run = Run('test_slug', PAPER, scale='smoke', device='cpu', out_dir=out)", ns)   # no `In`: plain Python
    assert ns["run"].smoke
