"""The README's results table, generated from figures/*/results.json and reseed.json (never by hand).

    python -m reprolib.dashboard          rewrite the table in README.md
    python -m reprolib.dashboard --check  exit 1 if the table is stale

Papers and cross-paper comparisons (paper kind 'comparison') get separate tables. Per notebook:
the headline claims (✓ pass, ✗ fail, ? inconclusive), the other claims and checks, the verdict, and
whether the verdict held under a disjoint seed set (reseed.json of the same main run).
"""
import json
import sys
from pathlib import Path

from .run.provenance import repo_root

START, END = "<!-- dashboard:start -->", "<!-- dashboard:end -->"
MARK = {"pass": "✓", "fail": "✗", "inconclusive": "?"}


def load_results(root: Path) -> list[dict]:
    owed = {}
    pending_path = root / "figures" / "pending.json"
    if pending_path.exists():
        owed = json.loads(pending_path.read_text())
    out = []
    for path in sorted((root / "figures").glob("*/results.json")):
        r = json.loads(path.read_text())
        r["_dir"] = path.parent.relative_to(root).as_posix()
        r["_pending"] = owed.get("runs", {}).get(r["slug"])
        reseed = path.with_name("reseed.json")
        r["_reseed"] = json.loads(reseed.read_text()) if reseed.exists() else None
        out.append(r)
    for slug, why in owed.get("runs", {}).items():   # a new notebook owed its first run has no results.json yet
        if slug not in {r["slug"] for r in out}:
            out.append(dict(slug=slug, _pending=why, _new=True, paper=dict(id="~"), claims=[]))
    return out


def stability(r: dict) -> str:
    s = r.get("_reseed")
    if not s:
        return "not checked"
    if s.get("main_run_id") != r.get("run_id"):
        return "not checked (stale)"
    return "stable" if s["stable"] else f"seed-sensitive ({s['verdict']})"


def _claims(r: dict, kinds) -> str:
    return ", ".join(f"{c['name']} {MARK.get(c.get('outcome'), '·')}" for c in r["claims"] if c.get("kind") in kinds)


def _row(r: dict, paper_cell: str) -> str:
    if r.get("_new"):
        return f"| {r['slug']} (new notebook) | — | {r['_pending']} | **pending first run** | not checked | — | — | — | |"
    if r.get("_pending"):
        return (f"| {paper_cell} | — | {r['_pending']} | **pending rerun** (last run: {r['verdict']}) | "
                f"not checked | — | — | — | |")
    fig = f"[png]({r['_dir']}/{r['figures'][0]}.png)" if r.get("figures") else ""
    device = r["device"].split(": ", 1)[-1]
    unmet = [g["name"] for g in r.get("regimes", []) if g.get("passed") is False]
    other = _claims(r, ("supporting", "property"))
    if unmet:
        other += ("; " if other else "") + "regime not reached: " + ", ".join(unmet)
    return (f"| {paper_cell} | {_claims(r, ('headline',))} | {other} | **{r['verdict']}** | {stability(r)} | "
            f"{len(r['seeds'])} | {device} | {r.get('gpu_minutes', 0):.1f} | {fig} |")


HEADER = ["| {what} | headline claims | other claims and checks | verdict | reseed | seeds | device | GPU min | figure |",
          "|---|---|---|---|---|---|---|---|---|"]


def render(root: Path | None = None) -> str:
    root = root or repo_root()
    results = sorted(load_results(root), key=lambda r: r["paper"]["id"])
    papers = [r for r in results if r["paper"].get("kind") != "comparison"]
    comparisons = [r for r in results if r["paper"].get("kind") == "comparison"]
    rows = [h.format(what="paper") for h in HEADER]
    for r in papers:
        p = r["paper"]
        rows.append(_row(r, f"{p['id']} [{p['title']}](https://arxiv.org/abs/{p['arxiv']})" if "arxiv" in p else ""))
    if comparisons:
        rows += ["", "Cross-paper comparisons (no single paper's claim):", ""] + [h.format(what="comparison") for h in HEADER]
        rows += [_row(r, f"{r['paper']['id']} {r['paper']['title']}") for r in comparisons]
    total = sum(float(r.get("gpu_minutes") or 0) for r in results if not r.get("_pending"))
    owed = sum(bool(r.get("_pending")) for r in results)
    rows.append(f"\n{len(results)} notebooks ({owed} pending a full-scale run under the current protocol); the committed runs' "
                f"wall times sum to **{total:.0f} GPU minutes** "
                "(runs packed several to a GPU; `make figures` packs them the same way). "
                "✓ pass, ✗ fail, ? inconclusive (inside the seed noise, or a regime check failed).")
    return "\n".join(rows)


def updated_readme(root: Path) -> tuple[str, str]:
    text = (root / "README.md").read_text()
    if START not in text or END not in text:
        raise ValueError(f"README.md lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return text, f"{head}{START}\n{render(root)}\n{END}{tail}"


def main(argv=None, root: Path | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = root or repo_root()
    old, new = updated_readme(root)
    if "--check" in argv:
        if old != new:
            print("README.md's results table is stale: run `make dashboard`")
            return 1
        return 0
    (root / "README.md").write_text(new)
    print("README.md results table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
