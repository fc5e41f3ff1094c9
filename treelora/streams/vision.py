"""The vision streams: ``digits`` and ``fashion-mnist``, five tasks of two classes each, read offline.

``digits``
    scikit-learn's bundled 8x8 digits as ``(1, 8, 8)`` float32 in [0, 1].
``fashion-mnist``
    Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, or
    ``$TREELORA_FASHION_MNIST_DIR``) as ``(1, 28, 28)`` float32 in [0, 1]. The official train and t10k files
    are pooled and re-split per class like every other stream (:mod:`treelora.streams.base`).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import Example, TaskStream, make_tasks, split_items

__all__ = ["FASHION_MNIST_CLASSES", "vision_stream", "load_digits", "load_fashion_mnist"]


def vision_stream(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    seed: int,
    train_per_class: int,
    test_per_class: int,
) -> TaskStream:
    """Build a 2-classes-per-task vision stream from ``images`` (N, C, H, W) float32 in [0, 1]."""
    per_class: dict[int, tuple[list[Example], list[Example]]] = {}
    for c, cname in enumerate(class_names):
        idx = np.flatnonzero(labels == c)
        train, test = split_items(list(idx), seed, f"{name}:{cname}", train_per_class, test_per_class)
        per_class[c] = (
            [Example(None, c, np.ascontiguousarray(images[i])) for i in train],
            [Example(None, c, np.ascontiguousarray(images[i])) for i in test],
        )
    slug = [n.replace(" ", "-") for n in class_names]
    groups = [(f"{slug[2 * i]}-vs-{slug[2 * i + 1]}", [2 * i, 2 * i + 1]) for i in range(len(class_names) // 2)]
    return TaskStream(name=name, modality="vision", class_names=class_names, tasks=make_tasks(groups, per_class))


def load_digits(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    """The ``digits`` stream: digits 2i and 2i+1 make task i."""
    from sklearn.datasets import load_digits as sklearn_digits  # bundled with scikit-learn: no download

    data = sklearn_digits()
    images = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    names = [str(d) for d in range(10)]
    return vision_stream("digits", images, np.asarray(data.target), names, seed, train_per_class, test_per_class)


FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path) -> np.ndarray:
    """Read a (possibly gzipped) IDX file of unsigned bytes."""
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


def load_fashion_mnist(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    """The ``fashion-mnist`` stream from the IDX files (raises FileNotFoundError saying how to install them)."""
    directory = Path(os.environ.get("TREELORA_FASHION_MNIST_DIR", _DEBIAN_FASHION_DIR)).expanduser()

    def find(stem: str) -> Path:
        for p in (directory / f"{stem}.gz", directory / stem):
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"Fashion-MNIST file {stem}(.gz) not found in {directory}. Install it with "
            "`apt-get install dataset-fashion-mnist` (files go to /usr/share/datasets/fashion-mnist) or set "
            "TREELORA_FASHION_MNIST_DIR to a directory holding the IDX files."
        )

    # The official train and t10k files are pooled and re-split per class like every other stream.
    images = np.concatenate([_read_idx(find("train-images-idx3-ubyte")), _read_idx(find("t10k-images-idx3-ubyte"))])
    labels = np.concatenate([_read_idx(find("train-labels-idx1-ubyte")), _read_idx(find("t10k-labels-idx1-ubyte"))])
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST in {directory}: {len(images)} images but {len(labels)} labels")
    pixels = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return vision_stream(
        "fashion-mnist", pixels, labels, list(FASHION_MNIST_CLASSES), seed, train_per_class, test_per_class
    )
