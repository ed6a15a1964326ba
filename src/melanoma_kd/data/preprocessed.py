"""Reader for the ``remove_hair`` output: PNG bytes per image id in one HDF5 file.

Layout: ``ids`` (utf-8, manifest order) and ``images`` (variable-length uint8 PNG bytes), so
images of any size (real data sets) pass losslessly from hair removal to the cache stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from melanoma_kd.errors import UserError
from melanoma_kd.imaging import decode_image


class PreprocessedStore:
    """Random access by image id to the hair-removed images."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
            ids = self._h5["ids"].asstr()[()]
            self._images = self._h5["images"]
        except (OSError, KeyError) as exc:
            raise UserError(
                f"{self.path}: not a readable preprocessed-image file ({exc})"
            ) from None
        self.index = {image_id: i for i, image_id in enumerate(ids)}

    def get(self, image_id: str) -> np.ndarray:
        """Decoded RGB uint8 image."""
        try:
            i = self.index[image_id]
        except KeyError:
            raise UserError(f"{self.path}: image {image_id} missing") from None
        return decode_image(
            np.asarray(self._images[i], dtype=np.uint8), f"{self.path} [{image_id}]"
        )

    def close(self) -> None:
        """Close the file."""
        self._h5.close()


@contextlib.contextmanager
def open_preprocessed(path: str | Path) -> Iterator[PreprocessedStore]:
    """Context manager over :class:`PreprocessedStore`."""
    store = PreprocessedStore(path)
    try:
        yield store
    finally:
        store.close()
