"""Small offline image sets: sklearn's 8x8 digits and Fashion-MNIST from IDX files.

digits: the UCI optical digits bundled with scikit-learn (1797 images, 8x8,
intensities 0..16), scaled to [0, 1]; a stratified split keeps the 10 class
frequencies equal in train and test.

fashion_mnist: Xiao, Rasul & Vollgraf 2017, arXiv 1708.07747, read from the
original IDX files. IDX layout (LeCun, yann.lecun.com/exdb/mnist): a big-endian
magic 0x0000TTDD (TT = 0x08 for ubyte, DD = number of dims), DD big-endian
int32 sizes, then the raw data. Debian's `dataset-fashion-mnist` package
installs the four .gz files in /usr/share/datasets/fashion-mnist/.
"""
import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_PREFIX = {"train": "train", "test": "t10k"}


def digits(test_frac: float = 0.25, seed: int = 0) -> dict:
    """{'x_train','y_train','x_test','y_test'}: x float32 [N, 1, 8, 8] in [0, 1], y int64 class ids."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = rearrange(d.data.astype(np.float32) / 16.0, "n (h w) -> n 1 h w", h=8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=test_frac, random_state=seed,
                                              stratify=d.target)
    return {"x_train": torch.from_numpy(x_tr), "y_train": torch.from_numpy(y_tr.astype(np.int64)),
            "x_test": torch.from_numpy(x_te), "y_test": torch.from_numpy(y_te.astype(np.int64))}


@functools.lru_cache(maxsize=4)
def read_idx(path: str) -> np.ndarray:
    """An IDX ubyte file (plain or .gz) as a read-only uint8 array of the declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX ubyte file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} = {int(np.prod(shape))} bytes, file holds {data.size}")
    return data.reshape(shape)   # frombuffer over bytes is read-only, so the cached copy cannot be mutated


def _find(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def _search_dirs(data_dir: str | None) -> list[Path]:
    dirs = [Path(data_dir)] if data_dir is not None else []
    env = os.environ.get("REPRO_DATA_DIR")
    if env:
        dirs += [Path(env) / "fashion-mnist", Path(env)]
    return dirs + [Path(DEBIAN_DIR)]


def fashion_mnist(split: str = "train", data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 28, 28], labels int64 [N]) from the first folder holding the split's two IDX files."""
    if split not in _PREFIX:
        raise ValueError(f"split must be one of {sorted(_PREFIX)}, got {split!r}")
    stems = (f"{_PREFIX[split]}-images-idx3-ubyte", f"{_PREFIX[split]}-labels-idx1-ubyte")
    dirs = _search_dirs(data_dir)
    for folder in dirs:
        found = [_find(folder, stem) for stem in stems]
        if all(found):
            x, y = (read_idx(str(p)) for p in found)
            if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
                raise ValueError(f"{folder}: images {x.shape} and labels {y.shape} do not pair up as [N,28,28], [N]")
            if y.size and y.max() >= len(FASHION_CLASSES):
                raise ValueError(f"{folder}: label {y.max()} outside 0..9")
            return torch.tensor(x), torch.tensor(y, dtype=torch.int64)
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({stems[0]}[.gz], {stems[1]}[.gz]) not found in: "
        + ", ".join(str(d) for d in dirs)
        + ". Get them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs into "
        + f"{DEBIAN_DIR}) or download the four IDX files from github.com/zalandoresearch/fashion-mnist "
        + "into a folder and set REPRO_DATA_DIR to it (or to its parent holding fashion-mnist/).")


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (images float32 [N, 8, 8] in [0, 1], labels int64 [N]), read straight from the
    CSV that scikit-learn ships (sklearn/datasets/data/digits.csv.gz: 64 intensities 0..16 and the label per
    row), without importing scikit-learn, whose import costs seconds in a smoke run."""
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-learn is not installed; its digits CSV ships with it")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 8, 8) / 16.0)
    return images, torch.from_numpy(table[:, -1].astype(np.int64))
