"""Run notebooks with papermill: `make figures` (full scale, in place) and smoke runs.

    python -m reprolib.figures [--nb SLUG] [--force]

At full scale each notebook runs in place, so the committed notebook holds the outputs of the run
that wrote figures/<slug>/. A notebook whose library and notebook source hash equals the one in
its results.json is skipped unless --force. The run goes to a temporary file first: a failed run
leaves the committed notebook and its figures as they were (the harness writes figures only when
the run finishes). With several GPUs, notebooks run side by side, one per GPU. At smoke scale
(REPRO_SCALE=smoke) the executed notebooks go to .smoke/ and nothing committed is touched.
"""
import argparse
import json
import os
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .run import repo_root, resolve_scale, source_hash


def notebooks(root: Path, slug: str | None = None) -> list[Path]:
    found = sorted(p for p in root.glob("notebooks/**/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if slug:
        found = [p for p in found if p.stem == slug]
        if not found:
            raise SystemExit(f"no notebook named {slug!r}; have: {[p.stem for p in notebooks(root)]}")
    return found


def up_to_date(root: Path, nb: Path) -> bool:
    res = root / "figures" / nb.stem / "results.json"
    if not res.exists():
        return False
    r = json.loads(res.read_text())
    return r.get("scale") == "full" and r.get("source_hash") == source_hash(nb.stem, root)


def run_one(root: Path, nb: Path, scale: str, gpu: int | None) -> tuple[str, bool, float]:
    env = dict(os.environ, REPRO_SCALE=scale)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    out = (root / ".smoke" / f"{nb.stem}.ipynb") if scale == "smoke" else nb.with_name(f".{nb.stem}.running.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(out), "-k", "python3",
                           "--cwd", str(nb.parent), "--log-level", "WARNING"], env=env)
    ok = proc.returncode == 0
    if scale == "full":
        if ok:
            os.replace(out, nb)
        else:
            print(f"{nb.stem}: FAILED; the committed notebook and figures are unchanged "
                  f"(the partial run is in {out.relative_to(root)})")
    return nb.stem, ok, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nb", help="run only this notebook (its slug)")
    ap.add_argument("--force", action="store_true", help="rerun even if source and library are unchanged")
    args = ap.parse_args(argv)
    root, scale = repo_root(), resolve_scale(None)
    todo = notebooks(root, args.nb)
    if scale == "full" and not args.force:
        skipped = [nb.stem for nb in todo if up_to_date(root, nb)]
        if skipped:
            print("up to date (use FORCE=1 to rerun):", ", ".join(skipped))
        todo = [nb for nb in todo if nb.stem not in skipped]
    n_gpus = 0
    if scale == "full":
        import torch
        n_gpus = torch.cuda.device_count()
        if n_gpus == 0:
            print("warning: no GPU visible; full-scale runs on the CPU will be very slow")
    slots = list(range(n_gpus)) if n_gpus > 1 else [None]
    free = queue.Queue()
    for gpu in slots:
        free.put(gpu)

    def on_free_gpu(nb):
        gpu = free.get()  # one notebook per GPU at a time
        try:
            return run_one(root, nb, scale, gpu)
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(len(slots)) as pool:
        results = list(pool.map(on_free_gpu, todo))
    for slug, ok, secs in results:
        print(f"{'ok  ' if ok else 'FAIL'} {slug} ({secs:.0f} s, {scale})")
    if scale == "full" and any(ok for _, ok, _ in results):
        from . import dashboard
        dashboard.main([])
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
