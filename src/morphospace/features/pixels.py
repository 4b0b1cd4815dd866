"""The pixel baseline of whole-image clustering: principal components of downscaled pixels.

Every crop or tile of a store is downscaled (mean over ``downscale`` x ``downscale`` blocks), each
of its channels z-scored on its own (as the embedders see them), flattened, and projected on the
principal components fitted on the rows ``fit_on`` (default: all). The result is an embedding table
like ``embed``'s: the store's ``Metadata_*`` columns, ``Metadata_StoreIndex`` and ``Embedding_000``...

Examples
--------
>>> import tempfile, pathlib, numpy as np, pandas as pd
>>> from morphospace.io.store import CropStoreWriter
>>> path = pathlib.Path(tempfile.mkdtemp()) / "store"
>>> rng = np.random.default_rng(0)
>>> with CropStoreWriter(path, ["DNA"], (8, 8)) as writer:
...     writer.append(rng.random((10, 1, 8, 8)).astype("float32"), pd.DataFrame({"Metadata_Well": ["A"] * 10}))
>>> table = pixel_pca_embeddings(CropStore(path), components=3, downscale=2)
>>> table.shape, list(table.columns[:3])
((10, 5), ['Metadata_Well', 'Metadata_StoreIndex', 'Embedding_000'])
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from skimage.transform import downscale_local_mean
from sklearn.decomposition import PCA

from morphospace.errors import InputError
from morphospace.io.store import CropStore

__all__ = ["downscaled_pixels", "pixel_pca_embeddings"]

_CHUNK = 256


def downscaled_pixels(store: CropStore, downscale: int = 4) -> np.ndarray:
    """(N, C * (H / downscale) * (W / downscale)) float32: every crop downscaled by block means, each
    channel z-scored within its crop (a constant channel gives zeros), flattened."""
    if downscale < 1 or store.crop_shape[-1] < downscale or store.crop_shape[-2] < downscale:
        raise InputError(f"{store.path}: cannot downscale {store.crop_shape} crops by {downscale}")
    if len(store.crop_shape) != 2:
        raise InputError(f"{store.path}: the pixel baseline takes 2-D crops, not {store.crop_shape}")
    rows = []
    for first in range(0, len(store), _CHUNK):
        images = np.asarray(store.images[first:first + _CHUNK], dtype=np.float32)
        small = downscale_local_mean(images, (1, 1, downscale, downscale))
        mean = small.mean(axis=(2, 3), keepdims=True)
        sd = small.std(axis=(2, 3), keepdims=True)
        rows.append(((small - mean) / np.where(sd > 0, sd, 1.0)).reshape(len(images), -1).astype(np.float32))
    return np.concatenate(rows)


def pixel_pca_embeddings(store: CropStore, components: int = 50, downscale: int = 4,
                         fit_on: np.ndarray | None = None, seed: int = 0) -> pd.DataFrame:
    """The store's crops as ``components`` principal components of :func:`downscaled_pixels`,
    fitted on the store rows ``fit_on`` (indices or a boolean mask; default all rows)."""
    pixels = downscaled_pixels(store, downscale)
    fitted = pixels if fit_on is None else pixels[np.asarray(fit_on)]
    n = min(components, *fitted.shape)
    if n < 1:
        raise InputError(f"{store.path}: no rows to fit the pixel PCA on")
    scores = PCA(n, random_state=seed).fit(fitted).transform(pixels)
    columns = [f"Embedding_{i:03d}" for i in range(n)]
    metadata = store.cells.reset_index(drop=True).assign(Metadata_StoreIndex=np.arange(len(store)))
    return pd.concat([metadata, pd.DataFrame(scores, columns=columns)], axis=1)
