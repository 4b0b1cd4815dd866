"""Model families (one module each: gan, vae), shared blocks and the registry."""
