"""The harness: scales, seeds, devices, claims, verdicts, results.json, atomic figure saving."""
import json

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reprolib.run import Run, resolve_device, resolve_scale, source_hash  # noqa: E402

PAPER = dict(id="P000", title="A test paper", arxiv="0000.00000")


def make_run(tmp_path, scale="full", **kw):
    with pytest.warns(UserWarning) if scale == "full" and not torch.cuda.is_available() else _nullwarn():
        return Run("test_slug", PAPER, scale=scale, device="cpu", out_dir=tmp_path, **kw)


class _nullwarn:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


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
    with pytest.raises(ValueError, match="valid"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_smoke_uses_one_seed_and_is_deterministic(tmp_path):
    run = make_run(tmp_path, scale="smoke", seeds=[3, 4, 5])
    assert run.seeds == [3] and run.pick(smoke=1, full=2) == 1
    a = torch.randn(4, generator=run.seed(3))
    b = torch.randn(4, generator=run.seed(3))
    assert torch.equal(a, b)


def test_claims_verdicts_and_results_json(tmp_path):
    run = make_run(tmp_path, seeds=[0, 1])
    run.claim("a", "first holds", "x <= 1.0")
    run.claim("b", "second holds", "abs(y) < 0.5 and z")
    with pytest.raises(SyntaxError):
        run.claim("bad", "typo", "x <=")
    run.measure(x=0.5, y=0.9, z=True)
    with pytest.raises(RuntimeError, match="before"):
        run.claim("late", "too late", "x > 0")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    run.savefig(fig, "curve")
    res = run.finish()
    assert res["verdict"] == "partially reproduced"
    on_disk = json.loads((tmp_path / "test_slug" / "results.json").read_text())
    assert [c["passed"] for c in on_disk["claims"]] == [True, False]
    assert on_disk["claims"][1]["measured"] == {"y": 0.9, "z": True}
    assert on_disk["scale"] == "full" and on_disk["seeds"] == [0, 1]
    assert (tmp_path / "test_slug" / "curve.png").exists() and (tmp_path / "test_slug" / "curve.pdf").exists()
    for key in ("device", "versions", "wall_time_s", "source_hash", "paper"):
        assert key in on_disk


@pytest.mark.parametrize("values,verdict", [((0.5, 0.1), "reproduced"), ((2.0, 0.9), "not reproduced")])
def test_verdict_all_or_none(tmp_path, values, verdict):
    run = make_run(tmp_path)
    run.claim("a", "a", "x <= 1.0")
    run.claim("b", "b", "y < 0.5")
    run.measure(x=values[0], y=values[1])
    assert run.finish()["verdict"] == verdict


def test_nan_and_inf_fail_and_serialise(tmp_path):
    run = make_run(tmp_path)
    run.claim("a", "a", "r <= 0.75")
    run.measure(r=float("nan"))
    run.record(t=float("inf"))
    assert run.finish()["verdict"] == "not reproduced"
    on_disk = json.loads((tmp_path / "test_slug" / "results.json").read_text())
    assert on_disk["records"]["t"] == "inf"


def test_smoke_reports_not_evaluated(tmp_path, capsys):
    run = make_run(tmp_path, scale="smoke")
    run.claim("a", "a", "x < 1")
    run.measure(x=0.0)
    res = run.finish()
    assert res["verdict"] == "not evaluated (smoke)" and res["claims"][0]["passed"] is None
    assert "claim a: not evaluated at smoke scale" in capsys.readouterr().out


def test_missing_measurement_is_an_error(tmp_path):
    run = make_run(tmp_path, scale="smoke")
    run.claim("a", "a", "x < 1")
    with pytest.raises(KeyError, match="x"):
        run.finish()


def test_failed_run_leaves_old_figures(tmp_path):
    out = tmp_path / "test_slug"
    out.mkdir()
    (out / "curve.png").write_bytes(b"old")
    run = make_run(tmp_path)
    fig, ax = plt.subplots()
    run.savefig(fig, "curve")
    # the notebook dies here: finish() never runs
    assert (out / "curve.png").read_bytes() == b"old"


def test_source_hash_changes_with_the_notebook(tmp_path):
    nb = tmp_path / "notebooks" / "t" / "s.ipynb"
    nb.parent.mkdir(parents=True)
    (tmp_path / "reprolib").mkdir()
    (tmp_path / "reprolib" / "x.py").write_text("a = 1\n")
    cell = lambda src, tags=(): dict(cell_type="code", source=src, metadata=dict(tags=list(tags)), outputs=[])
    nb.write_text(json.dumps(dict(cells=[cell("x = 1")])))
    h1 = source_hash("s", tmp_path)
    nb.write_text(json.dumps(dict(cells=[cell("x = 1"), cell("scale='smoke'", ["injected-parameters"])])))
    assert source_hash("s", tmp_path) == h1  # papermill's injected parameters do not count
    md = dict(cell_type="markdown", source="## Discussion, written after the run", metadata={})
    nb.write_text(json.dumps(dict(cells=[cell("x = 1"), md])))
    assert source_hash("s", tmp_path) == h1  # prose does not change what runs
    nb.write_text(json.dumps(dict(cells=[cell("x = 2")])))
    assert source_hash("s", tmp_path) != h1
    h2 = source_hash("s", tmp_path)
    (tmp_path / "reprolib" / "x.py").write_text("a = 2\n")
    assert source_hash("s", tmp_path) != h2  # a library change counts
