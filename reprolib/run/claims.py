"""Claims, regime checks and the verdict rule: written once here, used by every notebook.

A criterion is a comparison, or `and` / `or` of comparisons, over named measurements:

    "adamw_final - conda_final > 0"            Conda ends lower than AdamW
    "conda_steps_ratio <= 0.5"                 Conda needs at most half the steps
    "0.67 <= step_norm_ratio <= 1.5"           a chained comparison is an `and` of two

A measurement is a number, or one number per seed (a list in the order of `run.seeds`). Each
comparison is evaluated per seed, d_i = lhs_i - rhs_i (seed i of one method against seed i of the
other: the runs share initialisation and data order), and decided against the seed noise by a
one-sided t-test at 95% (Student's t with n - 1 degrees of freedom, se = sd(d) / sqrt(n)):

    pass          the whole confidence bound is on the claimed side:   mean(d) -/+ t * se beyond 0
    fail          the whole bound is on the other side
    inconclusive  the bound straddles the threshold: the margin is inside the seed noise

With one value (a quantity that does not vary with the seed, or a single seed) the sign decides.
`and` passes when every part passes and fails when any part fails; `or` passes when any part
passes and fails when every part fails; otherwise the result is inconclusive.

Regime checks are criteria that must hold for every seed (no noise test: the run either reached
the regime or did not). A failed regime check makes the claims it gates inconclusive.

The verdict comes from the headline claims alone:
    all pass                              -> reproduced
    all fail                              -> not reproduced
    all inconclusive                      -> inconclusive
    some pass, the rest fail or unclear   -> partially reproduced
    none pass, some fail, some unclear    -> not reproduced
"""
from __future__ import annotations

import ast
import math

import numpy as np

KINDS = ("headline", "supporting", "property")
PASS, FAIL, UNCLEAR = "pass", "fail", "inconclusive"
VERDICTS = ("reproduced", "partially reproduced", "not reproduced", "inconclusive")
CONFIDENCE = 0.95

# one-sided 95% quantiles of Student's t, by degrees of freedom (tests check them against scipy)
_T95 = {1: 6.3138, 2: 2.9200, 3: 2.3534, 4: 2.1318, 5: 2.0150, 6: 1.9432, 7: 1.8946, 8: 1.8595,
        9: 1.8331, 10: 1.8125, 11: 1.7959, 12: 1.7823, 13: 1.7709, 14: 1.7613, 15: 1.7531, 16: 1.7459,
        17: 1.7396, 18: 1.7341, 19: 1.7291, 20: 1.7247, 25: 1.7081, 30: 1.6973, 40: 1.6839, 60: 1.6706,
        120: 1.6577}

FUNCS = {"abs": np.abs, "minimum": np.minimum, "maximum": np.maximum, "log": np.log, "exp": np.exp,
         "sqrt": np.sqrt, "mean": np.mean, "median": np.median, "min": np.min, "max": np.max,
         "all": np.all, "any": np.any, "len": len, "np": np, "math": math}
_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


def t95(df: int) -> float:
    """One-sided 95% Student-t quantile (the largest tabulated df not above `df`; normal beyond 120)."""
    if df < 1:
        raise ValueError("need at least two seeds for a t quantile")
    if df > 120:
        return 1.6449
    return _T95[max(k for k in _T95 if k <= df)]


def names_in(criterion: str) -> list[str]:
    """The measurement names a criterion reads (functions excluded), in order of appearance."""
    tree = ast.parse(criterion, mode="eval")
    seen = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in FUNCS and node.id not in seen:
            seen.append(node.id)
    return seen


def parse(criterion: str) -> ast.Expression:
    """Parse and check a criterion now, so a typo fails at registration, not after the run."""
    tree = ast.parse(criterion, mode="eval")
    _check(tree.body, criterion)
    return tree


def _check(node, text):
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, text)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _OPS:
                raise SyntaxError(f"criterion {text!r}: comparisons use < <= > >= == != only")
    elif isinstance(node, ast.Name) or isinstance(node, ast.Constant) and isinstance(node.value, bool):
        pass  # a boolean measurement (a property check: "exact_zero_state")
    else:
        raise SyntaxError(f"criterion {text!r}: write a comparison (x > y), or `and`/`or` of comparisons")


def _value(node, env) -> np.ndarray:
    code = compile(ast.Expression(body=node), "<criterion>", "eval")
    return np.asarray(eval(code, {"__builtins__": {}, **FUNCS}, env), dtype=np.float64)


def _env(names, measured) -> dict:
    missing = [n for n in names if n not in measured]
    if missing:
        raise KeyError(f"the criterion needs measurements {missing}; record them with run.measure(...)")
    env = {}
    for n in names:
        try:
            env[n] = np.asarray(measured[n], dtype=np.float64)
        except (TypeError, ValueError):
            env[n] = measured[n]   # a ragged list: only functions of it can be compared
    return env


def compare(lhs, rhs, op: str) -> dict:
    """One comparison of per-seed (or single) values with the seed-noise rule; returns its record."""
    lhs, rhs = np.atleast_1d(np.asarray(lhs, np.float64)), np.atleast_1d(np.asarray(rhs, np.float64))
    if lhs.ndim > 1 or rhs.ndim > 1 or (lhs.size > 1 and rhs.size > 1 and lhs.size != rhs.size):
        raise ValueError(f"per-seed values must be 1-D and of equal length, got {lhs.shape} and {rhs.shape}")
    d = lhs - rhs
    n = d.size
    rec = dict(op=op, lhs=_short(lhs), rhs=_short(rhs), n=n)
    if not np.all(np.isfinite(d)):
        # a run that diverged or never reached a target: compare the finite sides as they stand
        truth = _plain(lhs, rhs, op)
        rec.update(diff=None, noise=None, outcome=PASS if truth.all() else FAIL if not truth.any() else UNCLEAR)
        return rec
    mean = float(d.mean())
    noise = t95(n - 1) * float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    rec.update(diff=mean, noise=noise)
    if op in ("==", "!="):
        raise ValueError("== and != are for exact (property) checks: use them on single values")
    sign = 1.0 if op in (">", ">=") else -1.0
    lo, hi = sign * mean - noise, sign * mean + noise   # the claimed side is positive
    strict = op in (">", "<")
    if lo > 0 or (not strict and lo >= 0 and noise == 0):
        rec["outcome"] = PASS
    elif hi < 0 or (strict and hi <= 0 and noise == 0):
        rec["outcome"] = FAIL
    else:
        rec["outcome"] = UNCLEAR
    return rec


def _plain(lhs, rhs, op):
    return {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
            "==": np.equal, "!=": np.not_equal}[op](lhs, rhs)


def _short(x: np.ndarray):
    return float(x[0]) if x.size == 1 else [float(v) for v in x]


def evaluate(criterion: str, measured: dict) -> tuple[str, list[dict]]:
    """Outcome (pass / fail / inconclusive) of a claim's criterion and the record of each comparison."""
    tree = parse(criterion)
    env = _env(names_in(criterion), measured)
    parts: list[dict] = []

    def walk(node) -> str:
        if isinstance(node, ast.BoolOp):
            outs = [walk(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return FAIL if FAIL in outs else PASS if all(o == PASS for o in outs) else UNCLEAR
            return PASS if PASS in outs else FAIL if all(o == FAIL for o in outs) else UNCLEAR
        if isinstance(node, ast.Compare):
            outs, left = [], node.left
            for op, right in zip(node.ops, node.comparators):
                sym = _OPS[type(op)]
                lhs, rhs = _value(left, env), _value(right, env)
                if sym in ("==", "!="):
                    truth = bool(np.all(_plain(lhs, rhs, sym)))
                    rec = dict(op=sym, lhs=_short(np.atleast_1d(lhs)), rhs=_short(np.atleast_1d(rhs)),
                               outcome=PASS if truth else FAIL)
                else:
                    rec = compare(lhs, rhs, sym)
                rec["expr"] = f"{ast.unparse(left)} {sym} {ast.unparse(right)}"
                parts.append(rec)
                outs.append(rec["outcome"])
                left = right
            return FAIL if FAIL in outs else PASS if all(o == PASS for o in outs) else UNCLEAR
        truth = bool(np.all(_value(node, env)))
        parts.append(dict(expr=ast.unparse(node), outcome=PASS if truth else FAIL))
        return parts[-1]["outcome"]

    return walk(tree.body), parts


def holds_for_every_seed(criterion: str, measured: dict) -> bool:
    """A regime check: the criterion evaluated per seed, true only if it holds for each one."""
    tree = parse(criterion)
    env = _env(names_in(criterion), measured)

    def walk(node) -> bool:
        if isinstance(node, ast.BoolOp):
            vals = [walk(v) for v in node.values]
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.Compare):
            left, ok = node.left, True
            for op, right in zip(node.ops, node.comparators):
                ok &= bool(np.all(_plain(_value(left, env), _value(right, env), _OPS[type(op)])))
                left = right
            return ok
        return bool(np.all(_value(node, env)))

    return walk(tree.body)


def verdict(headline_outcomes: list[str]) -> str:
    """The verdict from the headline claims' outcomes (module docstring)."""
    if not headline_outcomes:
        raise ValueError("no headline claim: register the paper's key claim with kind='headline'")
    outs = set(headline_outcomes)
    if outs == {PASS}:
        return VERDICTS[0]
    if outs == {FAIL}:
        return VERDICTS[2]
    if outs == {UNCLEAR}:
        return VERDICTS[3]
    return VERDICTS[1] if PASS in outs else VERDICTS[2]
