"""Evaluation: segmentation accuracy now; MoA, retrieval, clustering, generation and ISL metrics later."""
