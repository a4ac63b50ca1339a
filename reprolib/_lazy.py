"""Lazy package attributes: a submodule is imported when a name from it is first used.

A run's results.json records hashes of the code of each reprolib module the run imported, and
`make figures` reruns a notebook only when that code changed (run/provenance.py). Eager
`from .x import y` in the package __init__ files would import every module for every notebook, so
that an edit anywhere would mark every result stale; lazy attributes keep the record to what a
notebook actually uses, and an export added to a table leaves older records current.
"""
import importlib
import sys
import types


def attach(package: str, exports: dict[str, str], modules=()) -> None:
    """Make `package` resolve exports[name] (a relative module, '.conda' holds `Conda`) on first use;
    names in `modules` are submodules exported as themselves ('.optim' for `optim`).

    Where a function shares its module's name (kernels.newton_schulz), importing the submodule
    binds the module to that name on the package; the package then still returns the function."""
    pkg = sys.modules[package]

    class LazyPackage(types.ModuleType):
        def __getattr__(self, name):
            if name not in exports:
                try:   # a submodule by its own name: optim.normuon
                    return importlib.import_module(f".{name}", package)
                except ModuleNotFoundError:
                    raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
            module = importlib.import_module(exports[name], package)
            return module if name in modules else getattr(module, name)

        def __getattribute__(self, name):
            value = super().__getattribute__(name)
            if isinstance(value, types.ModuleType) and name in exports and name not in modules:
                return getattr(value, name)
            return value

        def __dir__(self):
            return sorted(set(super().__dir__()) | set(exports))

    pkg.__class__ = LazyPackage


def exports_of(mapping: dict[str, list[str]]) -> dict[str, str]:
    """{'.conda': ['Conda', 'conda_update']} -> {'Conda': '.conda', 'conda_update': '.conda'}."""
    return {name: module for module, names in mapping.items() for name in names}
