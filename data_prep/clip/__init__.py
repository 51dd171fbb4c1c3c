"""``srw-clip precompute``: img2dataset image-text tars -> an open_clip teacher's image embeddings in shards."""
