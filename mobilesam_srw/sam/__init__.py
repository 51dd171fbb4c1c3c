"""The SAM path: the teacher (segment-anything), the student (TinyViT) and their training."""
