"""SAM evaluation: point grids, masks from embeddings, IoU, reports."""
