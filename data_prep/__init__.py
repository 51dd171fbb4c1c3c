"""Data preparation, every task's: the shared machinery (plan, subset and held-out split, keys, sources, image
decoding, the per-sample pipeline, shard encoding and writer, sample photos) and one folder per task
(``sam``: SA-1B, image folders, COCO -> teacher-embedding shards; ``clip``: img2dataset tars -> CLIP shards).
Classification reads CIFAR and ImageNet directly and has nothing to precompute."""

from mobilesam_srw.checkout import check_same_checkout

check_same_checkout(__file__, __name__)
