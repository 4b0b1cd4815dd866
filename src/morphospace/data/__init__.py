"""PyTorch access to crop stores: group-aware splits, augmentation, Dataset and LightningDataModule."""
