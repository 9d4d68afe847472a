"""Locates the datasets vendored inside the package and explains what is missing."""

from __future__ import annotations

from pathlib import Path

DATA_ROOT = Path(__file__).resolve().parent / "files"


class MissingDataError(FileNotFoundError):
  """A dataset file is not where jaxhw expects it."""


def vendored_path(relative: str) -> Path:
  """Returns the path of a vendored data file, or raises a `MissingDataError` saying where it was expected.

  Args:
    relative: path below `jaxhw/data/files/`, e.g. ``"mnist/mnist_5k.csv.gz"``.

  Returns:
    The absolute path of the file.
  """
  path = DATA_ROOT / relative
  if not path.is_file():
    raise MissingDataError(
        f"Expected the vendored data file {relative!r} at {path}, but it is not there. "
        "It ships with the jaxhw repository (jaxhw/data/files/); reinstall jaxhw from a full clone "
        "(`pip install -e .`), or restore the file from git (`git checkout -- jaxhw/data/files`)."
    )
  return path
