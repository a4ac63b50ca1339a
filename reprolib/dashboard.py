"""The README's results table, generated from figures/*/results.json (never written by hand).

    python -m reprolib.dashboard          rewrite the table in README.md
    python -m reprolib.dashboard --check  exit 1 if the table is stale
"""
import json
import sys
from pathlib import Path

from .run import repo_root

START, END = "<!-- dashboard:start -->", "<!-- dashboard:end -->"


def load_results(root: Path) -> list[dict]:
    out = []
    for path in sorted((root / "figures").glob("*/results.json")):
        r = json.loads(path.read_text())
        r["_dir"] = path.parent.relative_to(root).as_posix()
        out.append(r)
    return out


def render(root: Path | None = None) -> str:
    root = root or repo_root()
    rows = ["| paper | claims (held / not held) | verdict | seeds | device | GPU min | figure |",
            "|---|---|---|---|---|---|---|"]
    total = 0.0
    for r in sorted(load_results(root), key=lambda r: r["paper"]["id"]):
        p = r["paper"]
        held = ", ".join(f"{c['name']} {'✓' if c['passed'] else '✗'}" for c in r["claims"])
        fig = f"[png]({r['_dir']}/{r['figures'][0]}.png)" if r.get("figures") else ""
        device = r["device"].split(": ", 1)[-1]
        total += float(r.get("gpu_minutes") or 0)
        rows.append(f"| {p['id']} [{p['title']}](https://arxiv.org/abs/{p['arxiv']}) | {held} | "
                    f"**{r['verdict']}** | {len(r['seeds'])} | {device} | {r.get('gpu_minutes', 0):.1f} | {fig} |")
    rows.append(f"\n{len(rows) - 2} notebooks; `make figures` costs about **{total:.0f} GPU minutes** on one GPU "
                "(sum of the committed runs' wall time).")
    return "\n".join(rows)


def updated_readme(root: Path) -> tuple[str, str]:
    text = (root / "README.md").read_text()
    if START not in text or END not in text:
        raise ValueError(f"README.md lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return text, f"{head}{START}\n{render(root)}\n{END}{tail}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = repo_root()
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
