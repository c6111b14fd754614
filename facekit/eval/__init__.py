"""Verification evaluation (insightface's ``evaluate``: 10-fold accuracy, TAR@FAR) and
the ONNX recognition model that embeds faces for it."""
