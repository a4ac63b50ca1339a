"""Provenance (reprolib/run/provenance.py): what makes a recorded run stale, and what does not."""
import json

import pytest

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
    # a scheme-1 record (raw bytes of the notebook's code and of each module), as older runs wrote
    res = dict(slug="s", scale="full", provenance=dict(notebook=P.notebook_hash(nb, scheme=1),
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


def test_notebook_hash_ignores_comments_and_formatting(tmp_path):
    nb = tmp_path / "s.ipynb"
    write_nb(nb, [cell("steps = 600\nx = steps * 2")])
    h = P.notebook_hash(nb)
    write_nb(nb, [cell("steps = 600   # full scale only; smoke runs 12\n\nx = steps*2  # why")])
    assert P.notebook_hash(nb) == h                     # a comment cannot change what runs
    write_nb(nb, [cell("steps = 601\nx = steps * 2")])
    assert P.notebook_hash(nb) != h
    write_nb(nb, [cell("%matplotlib inline\nx = 1")])   # not plain Python: the text counts
    h2 = P.notebook_hash(nb)
    write_nb(nb, [cell("%matplotlib inline\nx = 1  # c")])
    assert P.notebook_hash(nb) != h2
    write_nb(nb, [cell("x = 1")])
    assert P.notebook_hash(nb, scheme=1) != P.notebook_hash(nb)   # scheme 1 hashed the raw text


MODULE = '''"""A module."""
import torch

from .._lazy import attach, exports_of

SCALE = 2.0
_EXPORTS = exports_of({".a": ["f"], ".b": ["g"]})
__all__ = ["f"]


def f(x):
    """Double."""
    return SCALE * x  # why


class K:
    def m(self):
        return 1
'''


def test_module_units_split_code_into_functions_exports_and_statements():
    u = P.module_units(MODULE)
    assert {"def f", "def K", "export '.a'", "export '.b'"} <= set(u)
    assert sum(k.startswith("stmt ") for k in u) == 3        # import torch, the lazy import, SCALE (not __all__)


@pytest.mark.parametrize("edit, stale", [
    (lambda s: s.replace('"""Double."""', '"""Twice x."""'), False),               # a docstring
    (lambda s: s.replace("# why", "# because"), False),                             # a comment
    (lambda s: s + "\n\ndef h():\n    return 3\n", False),                          # a new function
    (lambda s: s.replace('".b": ["g"]}', '".b": ["g"], ".c": ["h"]}'), False),      # a new export
    (lambda s: s.replace("import torch\n", "import torch\nimport math\n"), False),  # a new import
    (lambda s: s.replace('__all__ = ["f"]', '__all__ = ["f", "h"]'), False),
    (lambda s: s.replace("return SCALE * x", "return SCALE * x + 0"), "f"),         # code of a function
    (lambda s: s.replace("return 1", "return 2"), "K"),                             # a method
    (lambda s: s.replace("SCALE = 2.0", "SCALE = 3.0"), "a top-level statement"),   # a constant
    (lambda s: s.replace('".a": ["f"]', '".a2": ["f"]'), "'.a'"),                   # an export moved
    (lambda s: s.replace("def f(x)", "def f2(x)"), "f"),                            # a function gone
])
def test_only_changed_or_removed_code_makes_a_record_stale(tmp_path, monkeypatch, edit, stale):
    monkeypatch.setenv("REPRO_ROOT", str(tmp_path))
    mod = tmp_path / "reprolib" / "m.py"
    mod.parent.mkdir(parents=True)
    mod.write_text(MODULE)
    nb = tmp_path / "notebooks" / "t" / "s.ipynb"
    write_nb(nb, [cell("x = 1")])
    res = dict(slug="s", scale="full", provenance=dict(scheme=P.SCHEME, notebook=P.notebook_hash(nb),
                                                       modules={"reprolib/m.py": P.module_units(MODULE)}))
    mod.write_text(edit(MODULE))
    reasons = P.stale_reasons(res, tmp_path)
    if stale:
        assert len(reasons) == 1 and reasons[0].startswith("reprolib/m.py changed (") and stale in reasons[0]
    else:
        assert reasons == []


def test_trees_are_written_the_same_on_every_python():
    """Scheme 3 writes a tree by field name and leaves out None and empty lists: Python 3.12 added an
    empty `type_params` to every function and class, which changed `ast.dump` (scheme 2) under the
    records. The text is pinned here, so a Python that writes it differently fails this test."""
    import ast
    tree = ast.parse("def f(x, y=None):\n    return g(x, *[1])\n")
    want = ("Module(body=[FunctionDef(name='f', args=arguments(args=[arg(arg='x'), arg(arg='y')], defaults=[Constant()]),"
            " body=[Return(value=Call(func=Name(id='g', ctx=Load()), args=[Name(id='x', ctx=Load()),"
            " Starred(value=List(elts=[Constant(value=1)], ctx=Load()), ctx=Load())]))])])")
    assert P._dump(tree) == want
    fn = tree.body[0]
    fn.type_params = []                          # what 3.12 adds ...
    type(fn)._fields, saved = type(fn)._fields + ("type_params",), type(fn)._fields
    try:
        assert P._dump(tree) == want             # ... changes nothing
    finally:
        type(fn)._fields = saved


def test_the_provenance_module_itself_is_not_recorded():
    """Bookkeeping never reaches a result: changing how records are written must not make every result stale."""
    assert P.SELF not in P.module_hashes()
    res = dict(slug="x", scale="full", provenance=dict(scheme=P.SCHEME, notebook="", modules={P.SELF: {"def gone": "0"}}))
    assert not any(P.SELF in r for r in P.stale_reasons(res, P.repo_root()))
