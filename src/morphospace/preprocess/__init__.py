"""Field-level image corrections: quality control, illumination, background, denoising, normalisation."""
