"""Readers and writers: images, the crop store, manifests, npz/TIFF import, the BBBC021 layout."""
