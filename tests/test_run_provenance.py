"""Provenance (reprolib/run/provenance.py): what makes a recorded run stale, and what does not."""
import json

from reprolib.run import provenance as P


def cell(src, tags=()):
    return dict(cell_type="code", source=src, metadata=dict(tags=list(tags)), outputs=[])


def write_nb(path, cells):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(cells=cells, metadata={})))


def test_notebook_hash_counts_code_only(tmp_path):
    nb = tmp_path / "s.ipynb"
    write_nb(nb, [cell("x = 1")])
    h = P.notebook_hash(nb)
    write_nb(nb, [cell("x = 1"), cell("seeds = [100]", ["injected-parameters"])])
    assert P.notebook_hash(nb) == h          # papermill's injected parameters do not count
    write_nb(nb, [cell("x = 1"), dict(cell_type="markdown", source="## Discussion", metadata={})])
    assert P.notebook_hash(nb) == h          # prose does not change what runs
    write_nb(nb, [cell("x = 2")])
    assert P.notebook_hash(nb) != h


def test_stale_reasons_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))
    (tmp_path / "reprolib" / "optim").mkdir(parents=True)
    used, unused = tmp_path / "reprolib" / "optim" / "conda.py", tmp_path / "reprolib" / "optim" / "lion.py"
    used.write_text("a = 1\n")
    unused.write_text("b = 1\n")
    nb = tmp_path / "notebooks" / "t" / "s.ipynb"
    write_nb(nb, [cell("x = 1")])
    res = dict(slug="s", scale="full", provenance=dict(notebook=P.notebook_hash(nb),
                                                       modules={"reprolib/optim/conda.py": P._sha(b"a = 1\n")}))
    assert P.stale_reasons(res, tmp_path) == []
    unused.write_text("b = 2\n")
    assert P.stale_reasons(res, tmp_path) == []            # a module the run did not import
    used.write_text("a = 2\n")
    assert P.stale_reasons(res, tmp_path) == ["reprolib/optim/conda.py changed"]
    write_nb(nb, [cell("x = 2")])
    assert P.stale_reasons(res, tmp_path)[0] == "notebooks/t/s.ipynb code cells changed"
    used.unlink()
    assert "reprolib/optim/conda.py removed" in P.stale_reasons(res, tmp_path)
    assert P.stale_reasons(None, tmp_path) == ["no results.json"]
    assert P.stale_reasons(dict(res, scale="smoke"), tmp_path) == ["results.json is from a smoke run"]


def test_module_hashes_record_what_was_imported():
    import reprolib
    from reprolib import optim
    optim.Lion   # noqa: B018  (a lazy attribute: imports optim/lion.py now)
    mods = P.module_hashes()
    assert "reprolib/optim/lion.py" in mods and "reprolib/__init__.py" in mods
    assert reprolib.__name__ == "reprolib"


def test_lazy_packages_import_only_what_is_used():
    import subprocess
    import sys
    code = ("import sys; from reprolib import Run, optim; optim.Conda; "
            "print(sorted(m for m in sys.modules if m.startswith('reprolib.optim.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["reprolib.optim.base", "reprolib.optim.conda"]
