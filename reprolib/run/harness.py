"""The run harness: one object per notebook run that fixes scale, seeds and device, tunes under one
protocol, times the run, saves figures, decides the pre-registered claims and writes results.json.

    run = Run("normuon_vs_muon_adamw", paper=PAPER, scale=scale, seeds=seeds, device=device)
    steps = run.pick(smoke=30, full=1000)                        # sizes per scale, one code path
    run.claim("faster", "NorMuon ends below Muon", "muon_final - normuon_final > 0")  # before the run
    run.regime("muon_trained", "Muon beats the unigram loss", "muon_final < unigram - 0.5")
    tuned = run.tune("muon", lambda lr, seed: train(lr, seed), lrs=[1e-3, 2e-3, 4e-3])
    run.measure(muon_final=[...per seed...], normuon_final=[...])
    run.savefig(fig, "loss_curves")
    run.finish()                       # one line per claim and regime check, the verdict, results.json

Where results go (nothing but `make figures` writes figures/):
    make figures (REPRO_OUT set by the runner)   figures/<slug>/
    a full run by hand (papermill, Lab)          .runs/<slug>/          (ignored by git)
    smoke                                        .smoke/<slug>/         (ignored by git)
    a reseed run (REPRO_RESEED_FROM)             <out>/<slug>/reseed.json only

claims.py holds the rules (noise-aware comparisons, regime checks, the verdict).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import claims as C
from . import parameters as P
from .provenance import notebook_path, record as provenance_record, repo_root

SCALES = ("smoke", "full")
SMOKE_VERDICT = "not evaluated (smoke)"
TUNE_SEED_OFFSET = 1000   # tuning seeds are 1000 + the first reported seed: never a reported seed


def resolve_scale(scale: str | None) -> str:
    scale = scale or os.environ.get("REPRO_SCALE") or "full"
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales: {SCALES} (parameter `scale` or REPRO_SCALE)")
    return scale


def resolve_device(device: str | None) -> torch.device:
    device = device or "auto"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} but no CUDA GPU is visible; valid here: 'auto', 'cpu' "
                               "(a CPU build of torch, or CUDA_VISIBLE_DEVICES hides the GPUs)")
        return torch.device(device)
    raise ValueError(f"unknown device {device!r}; valid: 'auto', 'cpu', 'cuda', 'cuda:N'")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def library_versions() -> dict:
    import einops
    import matplotlib
    versions = dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                    matplotlib=matplotlib.__version__, einops=einops.__version__)
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    return versions


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # JSON has no inf/nan
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass
class Claim:
    name: str
    statement: str
    criterion: str
    kind: str = "headline"
    timing: bool = False
    counts: tuple = ()
    outcome: str | None = None
    parts: list = field(default_factory=list)
    values: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Regime:
    name: str
    statement: str
    criterion: str | None
    gates: tuple | None          # claim names; None: every headline claim
    passed: bool | None = None
    values: dict = field(default_factory=dict)


@dataclass
class Tuned:
    """The outcome of run.tune: the chosen lr, the tuning seed's run at every lr tried, the
    reported seeds' runs at the chosen lr, and what was added beyond the grid."""
    best_lr: float
    sweep: dict          # lr -> result on the tuning seed (reseed runs: {best_lr: first reported run})
    runs: list           # one result per reported seed at best_lr
    scores: dict         # lr -> selection score (lower is better)
    extended: list       # lrs added beyond the grid's edges
    on_edge: bool        # the best lr is still an edge of the grid after the extensions
    reused: bool = False  # a reseed run took best_lr from the main run instead of tuning


def grid_extensions(lrs, extend: int = 3) -> tuple[list, list]:
    """The lrs run.tune may add beyond each edge of a grid, nearest first: the grid's own ratio
    (second-smallest / smallest), `extend` steps down and up. Stacked notebooks that must train every
    candidate at once train these too."""
    lrs = sorted(float(lr) for lr in lrs)
    if len(lrs) < 2:
        return [], []
    ratio = lrs[1] / lrs[0]
    return [lrs[0] / ratio ** k for k in range(1, extend + 1)], [lrs[-1] * ratio ** k for k in range(1, extend + 1)]


def default_score(result) -> float:
    """The selection score: the final loss on the selection split, never the reported split."""
    sel = getattr(result, "select_loss", None)
    if sel is None:
        raise ValueError("run.tune selects on a held-out selection split: give train()/train_lm() a `select` "
                         "evaluation (the result's select_loss), or pass score= reading a split that is not reported")
    return sel if math.isfinite(sel) else math.inf


class Run:
    def __init__(self, slug: str, paper: dict, scale: str | None = None, seeds=(0, 1, 2),
                 device: str | None = "auto", smoke_seeds: int = 1, out_dir: str | Path | None = None,
                 tune_seeds=None):
        for key in ("id", "title"):
            if key not in paper:
                raise ValueError(f"paper needs keys id, title (and arxiv, or kind='comparison'); missing {key!r}")
        if "arxiv" not in paper and paper.get("kind") != "comparison":
            raise ValueError("paper needs an arxiv id (a cross-paper comparison says kind='comparison')")
        self.slug, self.paper = slug, dict(paper)
        self.scale = resolve_scale(scale)
        caller = inspect.currentframe().f_back
        self.parameters = _notebook_parameters(slug, caller)
        given, nb = P.injected(caller.f_globals) if caller else None, notebook_path(slug)
        defaults = P.declared(nb) if nb else {}
        if given and nb:
            P.check(nb, given, defaults)   # before any compute: a misspelled or ill-typed knob stops the run
        self._overrides = P.SmokeOverrides({n: v for n, v in (given or {}).items()
                                            if n not in ("scale", "seeds", "device") and defaults.get(n) != v})
        seeds = [int(s) for s in (seeds or [])]
        if not seeds:
            raise ValueError("seeds is empty; give at least one integer seed, e.g. seeds=[0, 1, 2]")
        self.seeds = seeds[:smoke_seeds] if self.smoke else seeds
        self.tune_seeds = [int(s) for s in tune_seeds] if tune_seeds else [TUNE_SEED_OFFSET + seeds[0]]
        if set(self.tune_seeds) & set(seeds):
            raise ValueError(f"tuning seeds {self.tune_seeds} overlap the reported seeds {seeds}")
        self.device = resolve_device(device)
        if self.full and self.device.type == "cpu":
            warnings.warn(f"{slug}: a FULL-scale run on the CPU will be very slow and its verdict is "
                          "meant for a GPU; use scale='smoke' (REPRO_SCALE=smoke) on a CPU.", stacklevel=2)
        reseed_from = os.environ.get("REPRO_RESEED_FROM")
        self.main_results = json.loads(Path(reseed_from).read_text()) if reseed_from else None
        if self.main_results and set(self.main_results["seeds"]) & set(self.seeds):
            raise ValueError(f"a reseed run needs seeds disjoint from the main run's {self.main_results['seeds']}")
        self.gpu_exclusive = {"1": True, "0": False}.get(os.environ.get("REPRO_GPU_EXCLUSIVE", ""))
        root = repo_root()
        env_out = os.environ.get("REPRO_OUT")
        base = Path(out_dir) if out_dir else Path(env_out) if env_out else root / (".runs" if self.full else ".smoke")
        self.out_dir = base / slug
        self._staging = Path(tempfile.mkdtemp(prefix=f"{slug}-"))
        self.claims: dict[str, Claim] = {}
        self.regimes: dict[str, Regime] = {}
        self.measured: dict = {}
        self.records: dict = {}
        self.tuning: dict = {}
        self.timings: dict = {}
        self.figures: list[str] = []
        self.t0 = time.perf_counter()
        seed_everything(self.seeds[0])
        if self.smoke:
            torch.use_deterministic_algorithms(True, warn_only=True)
            if self.device.type == "cpu":
                torch.set_num_threads(1)  # tiny ops: threads cost more than they give, and CI runs 2 notebooks at once
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        mode = " | reseed" if self.reseed else ""
        print(f"{slug} | scale={self.scale} | seeds={self.seeds} | tuning seeds={self.tune_seeds} | "
              f"device={device_name(self.device)}{mode}")
        if self.full and not env_out and not out_dir:
            print(f"note: results go to {self._rel(self.out_dir)}; only `make figures` writes figures/")

    smoke = property(lambda self: self.scale == "smoke")
    full = property(lambda self: self.scale == "full")
    reseed = property(lambda self: self.main_results is not None)

    @property
    def compile(self) -> bool:
        """Use torch.compile for training: on CUDA only (it halves step time on our small GPTs after a
        ~30 s compile per model shape; on the CPU the compile costs more than a smoke run)."""
        return self.device.type == "cuda"

    def pick(self, smoke, full):
        """The value for this run's scale: `steps = run.pick(smoke=30, full=1000)`. At smoke scale a
        parameter the caller changed that reaches `full` is replaced: a warning says so."""
        if self.smoke:
            self._overrides.seen(full, smoke)
            return smoke
        return full

    def seed(self, seed: int) -> torch.Generator:
        """Seed python, numpy and torch; return a torch.Generator on the run's device."""
        seed_everything(seed)
        return torch.Generator(device=self.device).manual_seed(seed)

    @contextlib.contextmanager
    def timer(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t

    # ---- registration, before any measurement ------------------------------------------------------
    def _registering(self, name):
        if self.measured:
            raise RuntimeError("claims and regime checks must be registered before any measurement is recorded")
        if name in self.claims or name in self.regimes:
            raise ValueError(f"{name!r} registered twice")

    def claim(self, name: str, statement: str, criterion: str, kind: str = "headline", timing: bool = False,
              counts=()) -> Claim:
        """Pre-register a claim. kind: 'headline' (the paper's key claim as the paper states it: the
        verdict comes from these alone), 'supporting', or 'property' (an invariant or implementation
        fact). timing=True: the claim is about wall-clock time; it is decided only when the GPU ran
        this notebook alone, and `counts` names the hardware-independent counts (FLOPs, steps) recorded
        beside it."""
        self._registering(name)
        if kind not in C.KINDS:
            raise ValueError(f"claim kind {kind!r}; valid: {C.KINDS}")
        C.parse(criterion)
        if timing and not counts:
            raise ValueError(f"timing claim {name!r}: name the hardware-independent counts (FLOPs, steps) "
                             "recorded beside it, counts=('...',)")
        self.claims[name] = Claim(name, statement, criterion, kind, timing, tuple(counts))
        return self.claims[name]

    def regime(self, name: str, statement: str, criterion: str, gates=None) -> Regime:
        """Pre-register a regime check: the run reached the regime a claim is about (the baseline
        trained, the loss flattened, enough steps). It must hold for every seed; if not, the claims it
        gates (default: every headline claim; gates=() gates none: a reported diagnostic) are
        inconclusive, never failed."""
        self._registering(name)
        C.parse(criterion)
        self.regimes[name] = Regime(name, statement, criterion, tuple(gates) if gates is not None else None)
        return self.regimes[name]

    def measure(self, **values) -> None:
        """Record the numbers the claims are judged on (one per seed where they vary with the seed)."""
        self.measured.update(values)

    def record(self, **values) -> None:
        """Record numbers for results.json that no claim is judged on (tables, diagnostics)."""
        self.records.update(values)

    # ---- tuning ----------------------------------------------------------------------------------
    def tune(self, key: str, fn: Callable[[float, int], object], lrs, score: Callable | None = None,
             extend: int = 3, gates=None) -> Tuned:
        """The collection's tuning protocol, one call per tuned (method, setting):

        1. run `fn(lr, seed)` for every lr of the grid on the tuning seeds (never reported);
        2. score each on the selection split (`score(result)`, default its select_loss: a held-out
           split that is not the one reported), median over tuning seeds, lower is better;
        3. while the best lr is an edge of the grid, add the next lr beyond it (the grid's own
           ratio), at most `extend` times (each added lr is recorded);
        4. run the reported seeds at the best lr.
        (grid_extensions(lrs, extend) lists the lrs step 3 may add.)
        A best lr still on an edge afterwards fails the regime check `<key>_lr_inside_grid`, which
        gates `gates` (default every headline claim). A reseed run reuses the main run's lr."""
        score = score or default_score
        lrs = sorted(float(lr) for lr in lrs)
        if self.reseed and key in self.main_results.get("tuning", {}):
            main = self.main_results["tuning"][key]
            best = float(main["best"])
            runs = [fn(best, s) for s in self.seeds]
            t = Tuned(best, {best: runs[0]}, runs, {}, [], bool(main["on_edge"]), reused=True)
            self.tuning[key] = dict(main, reused_from_main_run=True)
            if len(main["grid"]) >= 2:
                self._edge_regime(key, t, gates, lo=main["lrs"][0], hi=main["lrs"][-1])
            return t
        sweep = {lr: [fn(lr, s) for s in self.tune_seeds] for lr in lrs}

        def s(lr):
            v = float(np.median([score(r) for r in sweep[lr]]))
            return v if math.isfinite(v) else math.inf

        scores = {lr: s(lr) for lr in sweep}
        extended = []
        below, above = grid_extensions(lrs, extend)
        best = min(scores, key=scores.get)
        while len(lrs) >= 2 and best in (min(scores), max(scores)) and len(extended) < extend:
            new = (below if best == min(scores) else above).pop(0)
            sweep[new] = [fn(new, s_) for s_ in self.tune_seeds]
            scores[new] = s(new)
            extended.append(new)
            best = min(scores, key=scores.get)
        scores = dict(sorted(scores.items()))
        on_edge = len(lrs) >= 2 and best in (min(scores), max(scores))
        runs = [fn(best, s_) for s_ in self.seeds]
        t = Tuned(best, {lr: sweep[lr][0] for lr in sorted(sweep)}, runs, scores, extended, on_edge)
        self.tuning[key] = dict(grid=lrs, lrs=list(scores), scores=list(scores.values()), best=best,
                                extended=extended, on_edge=on_edge, tune_seeds=self.tune_seeds)
        if len(lrs) >= 2:
            self._edge_regime(key, t, gates, lo=min(scores), hi=max(scores))
        print(f"tuned {key}: best lr {best:g} on tuning seeds {self.tune_seeds}"
              + (f"; grid extended by {', '.join(f'{x:g}' for x in extended)}" if extended else "")
              + ("; STILL ON THE GRID EDGE" if on_edge else ""))
        return t

    def _edge_regime(self, key, t, gates, lo, hi):
        name = f"{key}_lr_inside_grid"
        if name in self.regimes:
            raise ValueError(f"{key!r} tuned twice")
        self.regimes[name] = Regime(
            name, f"{key}: the selected lr ({t.best_lr:g}) must lie inside the tuned grid [{lo:g}, {hi:g}], "
                  "not on its edge (after extending it there)", None, tuple(gates) if gates is not None else None,
            passed=not t.on_edge, values=dict(best_lr=t.best_lr, lowest=lo, highest=hi))

    # ---- figures and results ---------------------------------------------------------------------
    def savefig(self, fig, name: str, pdf: bool = True) -> Path:
        """Save PNG (100 dpi) and PDF; they land in out_dir when finish() succeeds."""
        for ext in ("png", "pdf") if pdf else ("png",):
            fig.savefig(self._staging / f"{name}.{ext}", dpi=100, bbox_inches="tight")
        self.figures.append(name)
        return self.out_dir / f"{name}.png"

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _rel(self, path: Path) -> str:
        root = repo_root()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def evaluate(self) -> str:
        """Decide every claim and regime check; return the verdict (also at smoke scale, for tests)."""
        if not any(c.kind == "headline" for c in self.claims.values()):
            raise RuntimeError("no headline claim registered: state the paper's key claim with kind='headline'")
        for r in self.regimes.values():
            if r.criterion is not None:
                r.values = {n: self.measured.get(n) for n in C.names_in(r.criterion)}
                r.passed = C.holds_for_every_seed(r.criterion, self.measured)
        main_claims = {c["name"]: c for c in (self.main_results or {}).get("claims", [])}
        for c in self.claims.values():
            c.outcome, c.parts = C.evaluate(c.criterion, self.measured)
            c.values = {n: self.measured[n] for n in C.names_in(c.criterion)}
            missing = [n for n in c.counts if n not in self.measured and n not in self.records]
            if missing:
                raise KeyError(f"timing claim {c.name!r}: record its counts {missing} with run.record(...)")
            if c.timing and self.reseed and c.name in main_claims:
                c.outcome, c.note = main_claims[c.name]["outcome"], "timing claim: carried from the main run"
            elif c.timing and self.gpu_exclusive is False:
                c.outcome, c.note = C.UNCLEAR, "timing claim on a GPU shared with other runs"
        for r in self.regimes.values():
            if r.passed:
                continue
            gated = r.gates if r.gates is not None else [c.name for c in self.claims.values() if c.kind == "headline"]
            for name in gated:
                if name not in self.claims:
                    raise KeyError(f"regime check {r.name!r} gates unknown claim {name!r}")
                c = self.claims[name]
                if c.outcome != C.UNCLEAR or not c.note:
                    c.note = f"regime check {r.name} failed (measured: {c.outcome})"
                c.outcome = C.UNCLEAR
        return C.verdict([c.outcome for c in self.claims.values() if c.kind == "headline"])

    def finish(self) -> dict:
        """Decide the claims, print one line per claim and regime check and the verdict, write results."""
        verdict = self.evaluate()
        if self.smoke:
            verdict = SMOKE_VERDICT
        wall = self.elapsed
        for r in self.regimes.values():
            status = ("ok" if r.passed else "NOT REACHED") if self.full else "not evaluated at smoke scale"
            print(f"regime {r.name}: {status} | {r.criterion or r.statement} | "
                  + ", ".join(f"{k}={_fmt(v)}" for k, v in r.values.items()))
        for c in self.claims.values():
            status = c.outcome.upper() if self.full else "not evaluated at smoke scale"
            margin = "; ".join(f"{p['expr']}: diff {_fmt(p['diff'])} ± {_fmt(p['noise'])}"
                               for p in c.parts if p.get("diff") is not None and p.get("n", 1) > 1)
            print(f"claim {c.name} [{c.kind}{', timing' if c.timing else ''}]: {status} | {c.criterion} | "
                  + ", ".join(f"{k}={_fmt(v)}" for k, v in c.values.items())
                  + (f" | {margin}" if margin else "") + (f" | {c.note}" if c.note else ""))
        print(f"verdict: {verdict}")
        finished = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        prov = provenance_record(self.slug)
        results = dict(
            slug=self.slug, paper=self.paper, scale=self.scale, seeds=self.seeds, tune_seeds=self.tune_seeds,
            device=device_name(self.device), gpu_exclusive=self.gpu_exclusive, versions=library_versions(),
            wall_time_s=round(wall, 1), gpu_minutes=round(wall / 60, 2) if self.device.type == "cuda" else 0.0,
            verdict=verdict,
            claims=[dict(name=c.name, kind=c.kind, timing=c.timing, statement=c.statement, criterion=c.criterion,
                         measured=c.values, comparisons=c.parts, counts=list(c.counts),
                         outcome=c.outcome if self.full else None, note=c.note) for c in self.claims.values()],
            regimes=[dict(name=r.name, statement=r.statement, criterion=r.criterion, gates=r.gates,
                          measured=r.values, passed=r.passed if self.full else None) for r in self.regimes.values()],
            tuning=self.tuning, parameters=self.parameters, measured=self.measured, records=self.records,
            timings={k: round(v, 2) for k, v in self.timings.items()}, figures=self.figures,
            provenance=prov, finished_utc=finished, run_id=f"{finished}-{prov['notebook']}",
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.reseed:
            results = self._reseed_record(results)
            atomic_write(self.out_dir / "reseed.json", (json.dumps(_jsonable(results), indent=1) + "\n").encode())
            shutil.rmtree(self._staging, ignore_errors=True)
            print(f"reseed: verdict {results['verdict']} (main run: {results['main_verdict']}) -> "
                  f"{'stable' if results['stable'] else 'SEED-SENSITIVE'}")
            print(f"wrote {self._rel(self.out_dir)}/reseed.json | wall {wall:.0f} s")
            return results
        for f in sorted(self._staging.iterdir()):
            atomic_write(self.out_dir / f.name, f.read_bytes())
        shutil.rmtree(self._staging, ignore_errors=True)
        atomic_write(self.out_dir / "results.json", (json.dumps(_jsonable(results), indent=1) + "\n").encode())
        print(f"wrote {self._rel(self.out_dir)}/results.json | wall {wall:.0f} s")
        return results

    def _reseed_record(self, results: dict) -> dict:
        main = self.main_results
        by_name = {c["name"]: c for c in main["claims"]}
        per_claim = [dict(name=c["name"], kind=c["kind"], main=by_name.get(c["name"], {}).get("outcome"),
                          reseed=c["outcome"], holds=by_name.get(c["name"], {}).get("outcome") == c["outcome"],
                          note=c["note"]) for c in results["claims"]]
        return dict(results, main_run_id=main.get("run_id"), main_seeds=main["seeds"], main_verdict=main["verdict"],
                    claims_compared=per_claim, stable=main["verdict"] == results["verdict"])


def _notebook_parameters(slug: str, frame) -> dict:
    """The values of the names the notebook's parameters cell assigns, as the run starts (after
    papermill injected its own), read from the caller's namespace: results.json records them."""
    nb = notebook_path(slug)
    if nb is None or frame is None:
        return {}
    try:
        names = list(P.declared(nb))
    except (SyntaxError, KeyError, json.JSONDecodeError):
        return {}
    scope = frame.f_globals
    return {n: _jsonable(scope[n]) for n in names if n in scope}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def show_source(*objs) -> None:
    """Show the library's own source of functions/classes in a notebook (no second copy)."""
    text = "\n\n".join(inspect.getsource(o) for o in objs)
    try:
        from IPython.display import Markdown, display
        display(Markdown(f"```python\n{text}\n```"))
    except ImportError:  # plain Python
        print(text)
