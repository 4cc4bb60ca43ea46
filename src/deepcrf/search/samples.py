"""The images a CRF search scores: photo, network probabilities and ground truth per image.

``Sample`` holds arrays (API use, tests); ``SampleFiles`` holds paths (folders, saved
probabilities) and is what worker processes receive: each process reads a file once and keeps
it (probabilities memory-mapped, so processes share the page cache instead of copies).
``folder_samples`` pairs ``--images``, ``--probs`` and ``--labels`` folders by file stem.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepcrf.data.io import IMAGE_EXTENSIONS, read_image, read_label
from deepcrf.fileio import files_by_stem

__all__ = [
    "Sample",
    "SampleFiles",
    "check_samples",
    "fingerprint",
    "folder_samples",
    "forget",
    "load_sample",
    "spill",
    "take_first",
    "worker_samples",
]


@dataclass(frozen=True, eq=False)
class Sample:
    """One image: ``image`` (H, W, 3) uint8 raw pixels, ``probs`` (L, H, W) class
    probabilities, ``label`` (H, W) class indices (``ignore_index`` = void)."""

    name: str
    image: np.ndarray
    probs: np.ndarray
    label: np.ndarray


@dataclass(frozen=True)
class SampleFiles:
    """One image as files: a photo, a .npy (L, H, W) of probabilities, a label PNG."""

    name: str
    image: Path
    probs: Path
    label: Path


_LOADED: dict[SampleFiles, Sample] = {}


def load_sample(sample: Sample | SampleFiles) -> Sample:
    """The arrays of a sample; files are read once per process and kept."""
    if isinstance(sample, Sample):
        return sample
    loaded = _LOADED.get(sample)
    if loaded is None:
        probs = _load_probs(sample.probs)
        image = _npy(sample.image) if sample.image.suffix == ".npy" else read_image(sample.image)
        label = _npy(sample.label) if sample.label.suffix == ".npy" else read_label(sample.label)
        loaded = _LOADED[sample] = Sample(sample.name, image, probs, label)
    return loaded


def forget(samples: Iterable[Sample | SampleFiles]) -> None:
    """Drop file samples from this process's cache (e.g. temporary files about to go)."""
    for s in samples:
        if isinstance(s, SampleFiles):
            _LOADED.pop(s, None)


def _npy(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def spill(samples: Sequence[Sample | SampleFiles], folder: Path) -> list[SampleFiles]:
    """In-memory samples written to ``folder`` as .npy files (workers memory-map them instead
    of receiving pickled copies with every task); file samples are kept as they are."""
    out = []
    for i, s in enumerate(samples):
        if isinstance(s, SampleFiles):
            out.append(s)
            continue
        paths = [folder / f"{i:06d}_{kind}.npy" for kind in ("image", "probs", "label")]
        for path, array in zip(paths, (s.image, s.probs, s.label)):
            np.save(path, np.ascontiguousarray(array))
        out.append(SampleFiles(s.name, *paths))
    return out


@contextlib.contextmanager
def worker_samples(
    samples: Sequence[Sample | SampleFiles], jobs: int, prefix: str
) -> Iterator[list[Sample | SampleFiles]]:
    """The samples as the scoring workers take them: with ``jobs > 1`` spilled to .npy files
    in a temporary folder (named with ``prefix``) that lives as long as the ``with`` block;
    with one job the samples themselves."""
    if jobs <= 1:
        yield list(samples)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield spill(samples, Path(folder))


def _load_probs(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"--probs: no such file {path}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--probs: {path} is not a readable .npy array ({exc})") from None


def folder_samples(images: str | Path, probs: str | Path, labels: str | Path) -> list[SampleFiles]:
    """Samples from three folders paired by file stem, sorted by name.

    Every photo needs a probability file and a label map; probability or label files
    without a photo are ignored (a label folder often holds the whole dataset's maps)."""
    photos = files_by_stem(images, IMAGE_EXTENSIONS, "--images")
    prob_files = files_by_stem(probs, (".npy",), "--probs")
    label_files = files_by_stem(labels, (".png",), "--labels")
    if not photos:
        raise ValueError(f"--images: no images ({', '.join(IMAGE_EXTENSIONS)}) in {images}")
    problems = []
    for what, folder, found in (("--probs", probs, prob_files), ("--labels", labels, label_files)):
        missing = [n for n in photos if n not in found]
        if missing:
            problems.append(
                f"{len(missing)} images have no file in {what} {folder}: {missing[:10]}"
            )
    if problems:
        raise FileNotFoundError("; ".join(problems))
    return [SampleFiles(n, photos[n], prob_files[n], label_files[n]) for n in sorted(photos)]


def take_first(samples: Sequence, num_images: int | None) -> list:
    """The first ``num_images`` samples; fewer available is a warning, not an error."""
    if num_images is None:
        return list(samples)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"--num-images: expected an integer >= 1, got {num_images!r}")
    if len(samples) < num_images:
        warnings.warn(
            f"--num-images {num_images}: only {len(samples)} images available; using them all",
            UserWarning,
            stacklevel=2,
        )
    return list(samples[:num_images])


def check_samples(samples: Sequence[Sample | SampleFiles], ignore_index: int = 255) -> int:
    """Validate every sample (shapes, value ranges, one class count); return L.

    Errors name the sample's file (or name)."""
    if not samples:
        raise ValueError("samples: no images to search on")
    num_classes = None
    names = set()
    for s in samples:
        if s.name in names:
            raise ValueError(f"samples: the name {s.name!r} appears twice")
        names.add(s.name)
        where = str(s.probs) if isinstance(s, SampleFiles) else s.name
        x = load_sample(s)
        if x.probs.ndim != 3:
            raise ValueError(f"probs: {where} has shape {x.probs.shape}; expected (L, H, W)")
        if not np.issubdtype(x.probs.dtype, np.floating):
            raise ValueError(f"probs: {where} has dtype {x.probs.dtype}; expected floats")
        if x.image.ndim != 3 or x.image.shape[2] != 3:
            raise ValueError(f"image: {s.name} has shape {x.image.shape}; expected (H, W, 3)")
        if x.label.shape != x.probs.shape[1:] or x.image.shape[:2] != x.label.shape:
            raise ValueError(
                f"probs: {where} is {x.probs.shape[1]}x{x.probs.shape[2]} but the label map "
                f"is {x.label.shape[0]}x{x.label.shape[1]} and the image "
                f"{x.image.shape[0]}x{x.image.shape[1]} (sample {s.name}); sizes must match"
            )
        if num_classes is None:
            num_classes = x.probs.shape[0]
        elif x.probs.shape[0] != num_classes:
            raise ValueError(
                f"probs: {where} has {x.probs.shape[0]} classes, earlier files {num_classes}"
            )
        sums = np.asarray(x.probs, np.float32).sum(0)
        if not np.all(np.isfinite(sums)) or np.abs(sums - 1).max() > 1e-3:
            raise ValueError(
                f"probs: {where} does not hold probabilities (sums over the classes range "
                f"{np.nanmin(sums):.4g}..{np.nanmax(sums):.4g}, expected 1); save softmax "
                "outputs, not logits"
            )
        if np.asarray(x.probs).min() < 0:
            raise ValueError(f"probs: {where} has negative values; expected probabilities")
        bad = (x.label != ignore_index) & ((x.label < 0) | (x.label >= num_classes))
        if bad.any():
            values = np.unique(x.label[bad])[:10].tolist()
            raise ValueError(
                f"labels: {s.name} has values {values} outside 0..{num_classes - 1} that are "
                f"not the void label {ignore_index}"
            )
    assert num_classes is not None
    if num_classes < 2:
        raise ValueError(f"probs: expected at least 2 classes, got {num_classes}")
    return num_classes


def fingerprint(samples: Sequence[Sample | SampleFiles]) -> str:
    """A digest of the samples' names and contents (what a resumed search must match)."""
    digest = hashlib.blake2b(digest_size=16)
    for s in samples:
        x = load_sample(s)
        digest.update(s.name.encode("utf-8") + b"\0")
        for array in (x.image, x.probs, x.label):
            a = np.ascontiguousarray(array)
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(a.data)
    return digest.hexdigest()
