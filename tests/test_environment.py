"""environment.yml mirrors pyproject.toml and needs conda-forge alone."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAME = {"torch": "pytorch-cpu"}   # pyproject name -> conda-forge name where they differ


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert env["channels"] == ["conda-forge"], "conda-forge only (the old pytorch channel stopped at 2.5)"
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = {_name(d) for d in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)) if not d.startswith("-")}
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    missing = [r for r in wanted if CONDA_NAME.get(_name(r), _name(r)) not in conda | pip]
    assert not missing, f"environment.yml lacks {missing}"
    assert "pytorch" not in conda and "cpuonly" not in conda, "those come from the retired pytorch channel"
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    low = re.search(r">=(\d+\.\d+)", project["requires-python"]).group(1)
    assert tuple(map(int, py.split("=")[1].split("."))) >= tuple(map(int, low.split(".")))
