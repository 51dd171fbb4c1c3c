"""CLIP image-encoder distillation (the paper's Section 4.2): an open_clip teacher, a timm student.

- ``teacher``: the open_clip model from a local checkpoint, its preprocessing split into stored
  pixels and normalisation, ``encode_pixels``, the teacher identity.
- ``teacher_record``: rebuilding the teacher a shard folder, run or export records (sha256-checked).
- ``shards``: the CLIP shard format (the pixels the teacher saw, its ``[D]`` embedding, the caption).
- ``dataset``: random access into those shards for training.
- ``task``: ``ClipTrainConfig`` (the paper's lr 0.001, batch 1024, 10 epochs) and ``ClipTask`` on the engine.
- ``checkpoint``: the trained student file.
- ``zeroshot``: class names, prompt templates, the text-tower classifier (cached), logits, top-k.
- ``evaluate``: ``srw-clip eval``: zero-shot top-1/top-5 (Table 5), Table 4's tail bands, the report.
- ``student``: TinyViT (or any timm model) with a linear projection to the teacher's dimension.
- ``export``: the student with the teacher's text tower as an open_clip ``local-dir:`` model.

The img2dataset reader and the precompute driver are stages: ``data_prep/img2dataset.py`` and
``data_prep/clip_precompute.py``.
"""
