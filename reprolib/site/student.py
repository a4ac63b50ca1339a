"""`make student`: copies of every notebook for a class, in build/student/<theme>/<slug>.ipynb:
outputs cleared, the scale set to smoke (seconds on a laptop CPU), the hints kept and the worked
solutions taken out (teachers keep them in the repository's notebooks and on the site).

    python -m reprolib.site.student [--out build/student] [--keep-solutions]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..run.provenance import repo_root

SOLUTION = re.compile(r"\n?[ \t]*<details><summary>Worked solution</summary>.*?</details>[ \t]*\n?", re.S)
SMOKE_LINE = 'scale = "smoke"      # student copy: seconds on a laptop CPU; "full" needs a GPU (minutes)'


def student_copy(nb: dict, keep_solutions: bool = False) -> dict:
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                lines = src.split("\n")
                at = [i for i, line in enumerate(lines) if line.startswith("scale =")]
                if len(at) != 1:
                    raise ValueError("the parameters cell must assign `scale` on one line")
                lines[at[0]] = SMOKE_LINE
                src = "\n".join(lines)
        elif not keep_solutions:
            src = SOLUTION.sub("\n", src)
        cell["source"] = src
    nb.get("metadata", {}).pop("papermill", None)
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep-solutions", action="store_true")
    args = ap.parse_args(argv)
    root = repo_root()
    out = args.out or root / "build" / "student"
    n = 0
    for nb_path in sorted(p for p in root.glob("notebooks/*/*.ipynb") if not p.name.startswith(".")):
        dest = out / nb_path.parent.name / nb_path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(student_copy(json.loads(nb_path.read_text()), args.keep_solutions), indent=1) + "\n")
        n += 1
    print(f"{n} student notebooks in {out} (outputs cleared, scale smoke"
          f"{'' if args.keep_solutions else ', worked solutions removed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
