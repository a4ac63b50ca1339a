"""Run notebooks with papermill: `make figures` (full scale, in place), reseed checks and smoke runs.

    python -m reprolib.figures [--nb SLUG ...] [--force] [--reseed | --reseed-only] [--per-gpu N] [--dry-run]

Full scale. A notebook reruns only when its results.json no longer matches the code (the runner
says which file changed); --force reruns anyway. Each run executes into .runs/ and replaces the
committed notebook only when it succeeds, so the notebook holds the outputs of the run that wrote
figures/<slug>/, and a failed or interrupted run leaves notebooks/ and figures/ as they were.
Only these runs write figures/ (the runner sets REPRO_OUT).

Packing. Small notebooks leave most of a GPU idle, so up to --per-gpu of them share one GPU, on
every visible GPU. A notebook whose metadata says `"reprolib": {"exclusive_gpu": true}` (it times
things) runs alone on its GPU; its timing claims are decided only there.

Kept copies. Each successful run also leaves its executed notebook in .runs/<mode>/ and a copy of
figures/<slug>/ in .runs/keep/<slug>/, and when all runs have finished the runner puts them back: a
checkout copied over the running one (the next call of a GPU lease syncs the working tree) would
otherwise undo runs that finished before it.

Reseed. --reseed then reruns each notebook with a disjoint seed set (its seeds + 100), reusing the
main run's tuned learning rates, and writes figures/<slug>/reseed.json: each claim's outcome under
both seed sets and whether the verdict held (stored without indentation). Timing claims are carried over, so reseed runs pack.

Smoke (REPRO_SCALE=smoke): executed notebooks go to .smoke/; nothing committed is touched. On a GPU
host the smoke runs use the GPU: a few minutes that find the failures only CUDA shows (a CPU-only
random generator, numpy on a device tensor, subnormals flushed to zero) before full-scale runs start.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .run.harness import resolve_scale
from .run.provenance import repo_root, stale_reasons

RESEED_OFFSET = 100
DEFAULT_PER_GPU = 5   # five small notebooks kept an H200 at 100% utilisation (measured, two H200s)


@dataclass
class Job:
    nb: Path
    mode: str                 # "main" | "reseed" | "smoke"
    exclusive: bool = False
    estimate_s: float = 300.0
    after: "Job | None" = None
    proc: subprocess.Popen | None = None
    gpu: int | None = None
    started: float = 0.0
    status: str = "pending"   # pending | running | ok | failed | skipped
    log: Path | None = None
    out: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.nb.stem

    @property
    def name(self) -> str:
        return f"{self.slug} ({self.mode})"


def notebooks(root: Path, slugs=None) -> list[Path]:
    found = sorted(p for p in root.glob("notebooks/**/*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("."))
    if slugs:
        have = {p.stem: p for p in found}
        missing = [s for s in slugs if s not in have]
        if missing:
            raise SystemExit(f"no notebook named {missing}; have: {sorted(have)}")
        found = [have[s] for s in slugs]
    return found


def is_exclusive(nb: Path) -> bool:
    return bool(json.loads(nb.read_text())["metadata"].get("reprolib", {}).get("exclusive_gpu", False))


def results_of(root: Path, slug: str, name: str = "results.json") -> dict | None:
    path = root / "figures" / slug / name
    return json.loads(path.read_text()) if path.exists() else None


def reseed_current(root: Path, slug: str) -> bool:
    main, reseed = results_of(root, slug), results_of(root, slug, "reseed.json")
    return bool(main and reseed and reseed.get("main_run_id") == main.get("run_id"))


def pending(root: Path) -> dict:
    """figures/pending.json: the runs and reseed checks owed under the current protocol."""
    path = root / "figures" / "pending.json"
    return json.loads(path.read_text()) if path.exists() else {"runs": {}, "reseeds": {}}


def settle(root: Path, kind: str, slug: str) -> None:
    """A run or reseed check of `slug` succeeded: it is no longer owed."""
    path = root / "figures" / "pending.json"
    data = pending(root)
    if path.exists() and data.get(kind, {}).pop(slug, None) is not None:
        path.write_text(json.dumps(data, indent=1) + "\n")


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def start(job: Job, root: Path, scale: str, gpu: int | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # inline figures in the notebook
    env.update(REPRO_SCALE=scale, PYTHONUNBUFFERED="1", REPRO_ROOT=str(root))
    # packed runs share the host's cores: bound each one's CPU threads and compile workers
    env.setdefault("OMP_NUM_THREADS", str(job.extra.get("threads", 2)))
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(job.extra.get("threads", 2)))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    args = [sys.executable, "-m", "papermill", str(job.nb), "", "-k", "python3", "--cwd", str(job.nb.parent),
            "--log-level", "WARNING"]
    runs = root / ".runs"
    if job.mode == "smoke":
        job.out = root / ".smoke" / f"{job.slug}.ipynb"
    else:
        env.update(REPRO_OUT=str(root / "figures"), REPRO_GPU_EXCLUSIVE="1" if job.exclusive else "0")
        job.out = runs / job.mode / f"{job.slug}.ipynb"
    if job.mode == "reseed":
        main = results_of(root, job.slug)
        seeds = [s + RESEED_OFFSET for s in main["seeds"]]
        env["REPRO_RESEED_FROM"] = str(root / "figures" / job.slug / "results.json")
        args += ["-y", f"seeds: {seeds}"]
    args[4] = str(job.out)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    job.log = runs / "logs" / f"{job.slug}.{job.mode}.log"
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "w") as log:
        job.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    job.gpu, job.started, job.status = gpu, time.perf_counter(), "running"


def finish(job: Job, root: Path) -> None:
    ok = job.proc.returncode == 0
    secs = time.perf_counter() - job.started
    job.extra["wall_s"] = secs
    if job.mode == "main" and ok:
        shutil.copyfile(job.out, job.nb)   # the committed notebook now holds this run's outputs
    if ok and job.mode == "reseed":
        compact(root / "figures" / job.slug / "reseed.json")
    if ok and job.mode in ("main", "reseed"):
        keep(root, job.slug)
        settle(root, "runs" if job.mode == "main" else "reseeds", job.slug)
    job.status = "ok" if ok else "failed"
    where = f", gpu {job.gpu}" if job.gpu is not None else ""
    line = f"[{_stamp()}] {'ok    ' if ok else 'FAILED'} {job.name}{where}, {secs:.0f} s"
    if job.mode == "reseed" and ok:
        r = results_of(root, job.slug, "reseed.json") or {}
        line += f": verdict {r.get('verdict')} -> {'stable' if r.get('stable') else 'SEED-SENSITIVE'}"
    if not ok:
        line += f"; log {job.log.relative_to(root)}; notebooks/ and figures/ unchanged"
        tail = job.log.read_text(errors="replace").strip().splitlines()[-15:]
        line += "\n    " + "\n    ".join(tail)
    print(line, flush=True)


def compact(path: Path) -> None:
    """reseed.json without indentation: it repeats much of results.json, and a notebook's figures/
    folder has a size budget (the data are unchanged)."""
    if path.exists():
        path.write_text(json.dumps(json.loads(path.read_text()), separators=(",", ":")) + "\n")


def keep(root: Path, slug: str) -> None:
    """Copy figures/<slug>/ into .runs/keep/<slug>/ (ignored by git, so a synced checkout leaves it)."""
    src = root / "figures" / slug
    if src.is_dir():
        shutil.copytree(src, root / ".runs" / "keep" / slug, dirs_exist_ok=True)


def restore(root: Path, job: Job) -> bool:
    """Put a successful run's notebook and figures back where a synced checkout replaced them."""
    changed = False
    if job.mode == "main" and job.out is not None and job.out.exists() and job.out.read_bytes() != job.nb.read_bytes():
        shutil.copyfile(job.out, job.nb)
        changed = True
    kept = root / ".runs" / "keep" / job.slug
    if kept.is_dir():
        for f in kept.rglob("*"):
            dst = root / "figures" / job.slug / f.relative_to(kept)
            if f.is_file() and (not dst.exists() or dst.read_bytes() != f.read_bytes()):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst)
                changed = True
    return changed


def record_smoke_times(root: Path, done: list[Job]) -> None:
    """figures/_smoke/times.json: each notebook's compute time at smoke scale (the harness's wall time,
    kernel start excluded), measured one notebook at a time on this machine's CPU."""
    import platform
    path = root / "figures" / "_smoke" / "times.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                how="REPRO_SCALE=smoke python -m reprolib.figures --record-smoke-times (one notebook at a time)")
    times = data.setdefault("notebooks", {})
    for j in done:
        res = json.loads((root / ".smoke" / j.slug / "results.json").read_text())
        times[j.slug] = res["wall_time_s"]
    data["notebooks"] = dict(sorted(times.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"smoke times recorded in {path.relative_to(root)}")


def pick(gpu, gpus, running: dict, ready: list[Job], per_gpu: int) -> Job | None:
    """The next job for `gpu`. An exclusive job starts only on an empty GPU and, while packed work
    is waiting, on one GPU at a time (the others keep packing); packed jobs fill a GPU up to
    per_gpu. When an exclusive job waits and no GPU holds one, the least loaded GPU takes no new
    packed jobs, so that it empties."""
    here = running[gpu]
    if any(j.exclusive for j in here):
        return None
    excl = [j for j in ready if j.exclusive]
    packed = [j for j in ready if not j.exclusive]
    held = [g for g in gpus if any(j.exclusive for j in running[g])]
    if excl and not here and (not held or not packed):
        return excl[0]
    if len(here) >= per_gpu or not packed:
        return None
    if excl and not held and gpu == min(gpus, key=lambda g: (len(running[g]), str(g))):
        return None   # draining for the waiting exclusive job
    return packed[0]


def priority(j: Job) -> tuple:
    """With --in-order, the order of --nb first (a lease that must finish some notebooks, reseeds
    included, before it starts others). Then notebooks never run (a short GPU session should give them
    a result before it reruns older ones), then exclusive jobs (they hold a whole GPU, so they start
    early), then the longest."""
    return (j.extra.get("rank", 0), not j.extra.get("first", False), not j.exclusive, -j.estimate_s)


def expected_s(j: Job) -> float:
    """What a job is expected to take: its estimate, and for a reseed whose main run has just finished,
    0.6 of that run's wall time (a reseed reuses the tuned settings, so it skips the tuning runs)."""
    if j.mode == "reseed" and j.after is not None and "wall_s" in j.after.extra:
        return 0.6 * j.after.extra["wall_s"]
    return j.estimate_s


def schedule(jobs: list[Job], root: Path, scale: str, gpus: list, per_gpu: int,
             start_within_s: float | None = None, finish_within_s: float | None = None) -> None:
    running = {g: [] for g in gpus}
    t0 = time.perf_counter()
    try:
        while any(j.status in ("pending", "running") for j in jobs):
            if start_within_s is not None and time.perf_counter() - t0 > start_within_s:
                for j in jobs:
                    if j.status == "pending":
                        j.status = "not started"
                        print(f"[{_stamp()}] not started {j.name}: past --start-within; still owed", flush=True)
            for g in gpus:
                for j in list(running[g]):
                    if j.proc.poll() is not None:
                        running[g].remove(j)
                        finish(j, root)
            for j in jobs:
                if j.status == "pending" and j.after is not None and j.after.status in ("failed", "skipped",
                                                                                         "not started"):
                    j.status = "skipped"
                    print(f"[{_stamp()}] skip   {j.name}: its main run {'failed' if j.after.status == 'failed' else j.after.status}",
                          flush=True)
            if finish_within_s is not None:
                left = finish_within_s - (time.perf_counter() - t0)
                for j in jobs:
                    if j.status == "pending" and (j.after is None or j.after.status == "ok") and expected_s(j) > left:
                        j.status = "not started"
                        print(f"[{_stamp()}] not started {j.name}: expected {expected_s(j):.0f} s, {max(left, 0):.0f} s "
                              "left of --finish-within; still owed", flush=True)
            ready = sorted((j for j in jobs if j.status == "pending" and (j.after is None or j.after.status == "ok")),
                           key=priority)
            for g in gpus:
                while (j := pick(g, gpus, running, ready, per_gpu)) is not None:
                    ready.remove(j)
                    start(j, root, scale, g)
                    running[g].append(j)
                    where = f" on gpu {g}" if g is not None else ""
                    print(f"[{_stamp()}] start  {j.name}{where}{' (alone: it times things)' if j.exclusive else ''}"
                          f" | running: {sum(len(v) for v in running.values())}", flush=True)
            time.sleep(1.0)
    except KeyboardInterrupt:
        for j in jobs:
            if j.status == "running":
                j.proc.terminate()
        print("interrupted: running notebooks stopped; notebooks/ and figures/ are unchanged for them")
        raise


def main(argv=None, root: Path | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nb", nargs="*", help="only these notebooks (slugs)")
    ap.add_argument("--force", action="store_true", help="rerun even if the recorded code is unchanged")
    ap.add_argument("--reseed", action="store_true", help="also run the reseed check where it is not current")
    ap.add_argument("--reseed-only", action="store_true", help="only the reseed checks")
    ap.add_argument("--per-gpu", type=int, default=int(os.environ.get("REPRO_PER_GPU", DEFAULT_PER_GPU)),
                    help=f"notebooks packed on one GPU (default {DEFAULT_PER_GPU})")
    ap.add_argument("--in-order", action="store_true",
                    help="start runs in the order of --nb (a notebook's reseed right after its main run) "
                         "instead of never-run first, then longest first")
    ap.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    ap.add_argument("--finish-within", type=float, metavar="MINUTES",
                    help="start a run only if its expected wall time (its last run's, packed; a reseed 0.6 of its "
                         "main run's) ends within this many minutes: a lease of fixed length starts short runs late "
                         "instead of long runs that it would lose")
    ap.add_argument("--start-within", type=float, metavar="MINUTES",
                    help="start no run after this many minutes (a GPU lease of fixed length: what did not start "
                         "stays owed, and runs already started finish)")
    ap.add_argument("--record-smoke-times", action="store_true",
                    help="smoke scale: record each notebook's compute time in figures/_smoke/times.json (one at a time)")
    args = ap.parse_args(argv)
    root, scale = root or repo_root(), resolve_scale(None)
    nbs = notebooks(root, args.nb)
    jobs: list[Job] = []
    if scale == "smoke":
        jobs = [Job(nb, "smoke") for nb in nbs]
    else:
        for nb in nbs:
            res = results_of(root, nb.stem)
            main = None
            if not args.reseed_only:
                reasons = ["--force"] if args.force else stale_reasons(res, root)
                if reasons:
                    print(f"stale  {nb.stem}: {'; '.join(reasons[:4])}{' ...' if len(reasons) > 4 else ''}")
                    main = Job(nb, "main", is_exclusive(nb), float((res or {}).get("wall_time_s") or 300),
                               extra=dict(first=res is None))
                    jobs.append(main)
                else:
                    print(f"up to date  {nb.stem}")
            if args.reseed or args.reseed_only:
                if main is not None or not reseed_current(root, nb.stem):
                    if main is None and res is None:
                        print(f"no main run to reseed: {nb.stem}")
                        continue
                    est = float((res or {}).get("wall_time_s") or 300) * 0.6
                    # a timing notebook's reseed runs alone too: its timing claims are carried from the
                    # main run, but its budgets in seconds (equal-time comparisons) still need the GPU alone
                    jobs.append(Job(nb, "reseed", is_exclusive(nb), est, after=main, extra=dict(first=res is None)))
    if args.in_order:
        rank = {nb.stem: i for i, nb in enumerate(nbs)}
        for j in jobs:
            j.extra["rank"] = rank[j.slug]
    if args.dry_run or not jobs:
        print("nothing to run" if not jobs else "would run: " + ", ".join(j.name for j in jobs))
        return 0
    gpus: list = [None]
    if scale == "full":
        import torch
        n = torch.cuda.device_count()
        if n == 0:
            print("warning: no GPU visible; full-scale runs on the CPU will be very slow")
        gpus = list(range(n)) if n else [None]
    # smoke: two at a time on a laptop, up to eight on a GPU host (a CUDA check of every notebook in minutes
    # before a full-scale lease is spent on one that fails only on the GPU)
    per_gpu = (args.per_gpu if scale == "full" else 1 if args.record_smoke_times
               else min(8, max(2, (os.cpu_count() or 2) // 2)))
    threads = max(1, (os.cpu_count() or 2) // (per_gpu * len(gpus)))
    for j in jobs:
        j.extra["threads"] = (os.cpu_count() or 2) // len(gpus) if j.exclusive else threads
    t0 = time.perf_counter()
    print(f"[{_stamp()}] {len(jobs)} runs on {len(gpus)} {'GPU' if scale == 'full' else 'slot'}(s), "
          f"up to {per_gpu} per GPU", flush=True)
    schedule(jobs, root, scale, gpus, per_gpu, args.start_within * 60 if args.start_within else None,
             args.finish_within * 60 if args.finish_within else None)
    wall = time.perf_counter() - t0
    done = [j for j in jobs if j.status == "ok"]
    for j in done:   # again at the end: a checkout copied over the running one may have put back
        if j.mode in ("main", "reseed"):   # older notebooks, figures and pending.json while runs went on
            if restore(root, j):
                print(f"restored {j.name}: a synced checkout had replaced its outputs")
            settle(root, "runs" if j.mode == "main" else "reseeds", j.slug)
    print(f"\n{len(done)}/{len(jobs)} runs ok in {wall / 60:.1f} min of wall time; the runs' own wall times "
          f"sum to {sum(j.extra.get('wall_s', 0) for j in jobs) / 60:.1f} min")
    for j in jobs:
        print(f"  {j.status:8s} {j.name}: {j.extra.get('wall_s', 0):.0f} s{' (alone)' if j.exclusive else ''}")
    if scale == "smoke" and args.record_smoke_times:
        record_smoke_times(root, [j for j in done])
    if scale == "full" and done and (root / "README.md").exists():
        from . import dashboard
        dashboard.main([], root)
    return 0 if len(done) == len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
