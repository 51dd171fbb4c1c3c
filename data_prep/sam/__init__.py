"""``srw-sam precompute``: SA-1B tars, image folders or COCO -> a SAM-family teacher's embeddings in shards."""
