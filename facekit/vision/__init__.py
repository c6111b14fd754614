"""Pixels: image decoding, face detection (SCRFD, RetinaFace, YuNet decoders and the
selection rules), five-point alignment, masks and occlusions."""
