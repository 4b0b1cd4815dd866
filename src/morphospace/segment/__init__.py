"""Nuclei and cell segmentation, and nucleus-centred cropping with optional alignment."""
