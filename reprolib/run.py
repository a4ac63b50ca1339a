"""The run harness: one object per notebook run that fixes scale, seeds and device, times the run,
saves figures, evaluates the pre-registered claims and writes results.json.

    run = Run("normuon_vs_muon_adamw", paper=PAPER, scale=scale, seeds=seeds, device=device)
    steps = run.pick(smoke=30, full=1000)          # sizes per scale, one code path
    run.claim("faster", "NorMuon reaches Muon's loss sooner", "steps_ratio <= 0.95")   # before the run
    ...
    run.measure(steps_ratio=0.87)
    run.savefig(fig, "loss_curves")
    run.finish()                                   # prints one line per claim and the verdict

Claims are fixed before the experiment: a criterion is a Python expression over named
measurements, stored verbatim in results.json beside the measured values. At smoke scale they
are computed but reported as "not evaluated at smoke scale", and nothing is written under
figures/ (smoke output goes to .smoke/), so a smoke run never touches committed results.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
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
from pathlib import Path

import numpy as np
import torch

SCALES = ("smoke", "full")
VERDICTS = ("reproduced", "partially reproduced", "not reproduced")
SMOKE_VERDICT = "not evaluated (smoke)"
_CRITERION_FUNCS = {"abs": abs, "min": min, "max": max, "all": all, "any": any, "len": len, "math": math}


def repo_root() -> Path:
    """The checkout holding notebooks/ and figures/ (an editable install's parent), else the cwd."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "notebooks").is_dir() else Path.cwd()


def notebook_path(slug: str, root: Path | None = None) -> Path | None:
    found = sorted((root or repo_root()).glob(f"notebooks/**/{slug}.ipynb"))
    return found[0] if found else None


def source_hash(slug: str, root: Path | None = None) -> str:
    """sha256 of the library's source and the notebook's code cells (not markdown, not outputs, not
    the parameters papermill injects): equal hashes mean a rerun would run the same code."""
    root = root or repo_root()
    h = hashlib.sha256()
    for path in sorted((root / "reprolib").rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    nb = notebook_path(slug, root)
    if nb is not None:
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
                continue
            src = cell["source"]
            h.update(("".join(src) if isinstance(src, list) else src).encode())
    return h.hexdigest()[:16]


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
    if isinstance(x, (np.generic,)):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # JSON has no inf/nan
    return x


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Claim:
    def __init__(self, name: str, statement: str, criterion: str):
        compile(criterion, f"<claim {name}>", "eval")  # a typo fails now, not after the run
        self.name, self.statement, self.criterion = name, statement, criterion
        self.passed: bool | None = None
        self.values: dict = {}

    def evaluate(self, measured: dict) -> bool:
        code = compile(self.criterion, f"<claim {self.name}>", "eval")
        missing = [n for n in code.co_names if n not in measured and n not in _CRITERION_FUNCS]
        if missing:
            raise KeyError(f"claim {self.name!r} needs measurements {missing}; call run.measure(...) first")
        self.values = {n: measured[n] for n in code.co_names if n in measured}
        self.passed = bool(eval(code, {"__builtins__": {}, **_CRITERION_FUNCS}, dict(measured)))
        return self.passed


class Run:
    def __init__(self, slug: str, paper: dict, scale: str | None = None, seeds=(0, 1, 2),
                 device: str | None = "auto", smoke_seeds: int = 1, out_dir: str | Path | None = None):
        for key in ("id", "title", "arxiv"):
            if key not in paper:
                raise ValueError(f"paper needs keys id, title, arxiv; missing {key!r}")
        self.slug, self.paper = slug, dict(paper)
        self.scale = resolve_scale(scale)
        seeds = [int(s) for s in (seeds or [])]
        if not seeds:
            raise ValueError("seeds is empty; give at least one integer seed, e.g. seeds=[0, 1, 2]")
        self.seeds = seeds[:smoke_seeds] if self.smoke else seeds
        self.device = resolve_device(device)
        if self.full and self.device.type == "cpu":
            warnings.warn(f"{slug}: a FULL-scale run on the CPU will be very slow and its verdict is "
                          "meant for a GPU; use scale='smoke' (REPRO_SCALE=smoke) on a CPU.", stacklevel=2)
        root = repo_root()
        base = Path(out_dir) if out_dir else root / ("figures" if self.full else ".smoke")
        self.out_dir = base / slug
        self._staging = Path(tempfile.mkdtemp(prefix=f"{slug}-"))
        self.claims: dict[str, Claim] = {}
        self.measured: dict = {}
        self.records: dict = {}
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
        print(f"{slug} | scale={self.scale} | seeds={self.seeds} | device={device_name(self.device)}")

    smoke = property(lambda self: self.scale == "smoke")
    full = property(lambda self: self.scale == "full")

    @property
    def compile(self) -> bool:
        """Use torch.compile for training: on CUDA only (it halves step time on our small GPTs after a
        ~30 s compile per model shape; on the CPU the compile costs more than a smoke run)."""
        return self.device.type == "cuda"

    def pick(self, smoke, full):
        """The value for this run's scale: `steps = run.pick(smoke=30, full=1000)`."""
        return smoke if self.smoke else full

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

    def claim(self, name: str, statement: str, criterion: str) -> Claim:
        """Pre-register a claim: `criterion` is an expression over names given to measure()."""
        if self.measured:
            raise RuntimeError("claims must be registered before any measurement is recorded")
        if name in self.claims:
            raise ValueError(f"claim {name!r} registered twice")
        self.claims[name] = Claim(name, statement, criterion)
        return self.claims[name]

    def measure(self, **values) -> None:
        """Record the numbers the claims are judged on."""
        self.measured.update(values)

    def record(self, **values) -> None:
        """Record numbers for results.json that no claim is judged on (tables, diagnostics)."""
        self.records.update(values)

    def savefig(self, fig, name: str, pdf: bool = True) -> Path:
        """Save PNG (100 dpi) and PDF; they land in out_dir when finish() succeeds."""
        for ext in ("png", "pdf") if pdf else ("png",):
            fig.savefig(self._staging / f"{name}.{ext}", dpi=100, bbox_inches="tight")
        self.figures.append(name)
        return self.out_dir / f"{name}.png"

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def verdict(self) -> str:
        if self.smoke:
            return SMOKE_VERDICT
        passed = [c.passed for c in self.claims.values()]
        if passed and all(passed):
            return VERDICTS[0]
        return VERDICTS[1] if any(passed) else VERDICTS[2]

    def finish(self) -> dict:
        """Evaluate claims, print one line per claim and the verdict, write results.json."""
        if not self.claims:
            raise RuntimeError("no claims registered; a reproduction states what it tests")
        for c in self.claims.values():
            c.evaluate(self.measured)
        wall = self.elapsed
        for c in self.claims.values():
            status = ("PASS" if c.passed else "FAIL") if self.full else "not evaluated at smoke scale"
            values = ", ".join(f"{k}={_fmt(v)}" for k, v in c.values.items())
            print(f"claim {c.name}: {status} | {c.criterion} | {values}")
        verdict = self.verdict()
        print(f"verdict: {verdict}")
        results = dict(
            slug=self.slug, paper=self.paper, scale=self.scale, seeds=self.seeds,
            device=device_name(self.device), versions=library_versions(),
            wall_time_s=round(wall, 1),
            gpu_minutes=round(wall / 60, 2) if self.device.type == "cuda" else 0.0,
            claims=[dict(name=c.name, statement=c.statement, criterion=c.criterion,
                         measured=c.values, passed=c.passed if self.full else None)
                    for c in self.claims.values()],
            verdict=verdict, measured=self.measured, records=self.records,
            timings={k: round(v, 2) for k, v in self.timings.items()},
            figures=self.figures, source_hash=source_hash(self.slug),
            finished_utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(self._staging.iterdir()):
            os.replace(f, self.out_dir / f.name) if f.stat().st_dev == self.out_dir.stat().st_dev \
                else atomic_write(self.out_dir / f.name, f.read_bytes())
        shutil.rmtree(self._staging, ignore_errors=True)
        atomic_write(self.out_dir / "results.json", (json.dumps(_jsonable(results), indent=1) + "\n").encode())
        print(f"wrote {self.out_dir.relative_to(repo_root()) if self.out_dir.is_relative_to(repo_root()) else self.out_dir}"
              f"/results.json | wall {wall:.0f} s")
        return results


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
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
