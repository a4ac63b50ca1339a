"""The run harness every notebook stands on.

    harness.py     Run: scales, seeds, device, tuning protocol, figures, results.json, reseed records
    claims.py      claims, regime checks, noise-aware comparisons and the verdict rule
    provenance.py  hashes of the notebook's code and of each library module a run imported
    parameters.py  a notebook's declared parameters, what papermill injected, name and type checks
"""
from .claims import KINDS, VERDICTS
from .harness import (SCALES, SMOKE_VERDICT, Run, Tuned, atomic_write, device_name, grid_extensions, resolve_device,
                      resolve_scale, seed_everything, show_source)
from .provenance import notebook_hash, notebook_path, repo_root, stale_reasons

__all__ = ["KINDS", "VERDICTS", "SCALES", "SMOKE_VERDICT", "Run", "Tuned", "atomic_write", "device_name", "grid_extensions",
           "notebook_hash", "notebook_path", "repo_root", "resolve_device", "resolve_scale", "seed_everything",
           "show_source", "stale_reasons"]
