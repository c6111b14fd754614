"""Cleaning already aligned face datasets: quality signals, label noise within an identity,
duplicates, and identity merges across a dataset (issue 26). The functions here work on
embeddings and crops; the pipeline's stages call them."""
