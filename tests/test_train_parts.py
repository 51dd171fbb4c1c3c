"""Pieces of training: the SAM loss, the input transform, the batch order, the schedule."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mobilesam_srw.engine.plan import BatchPlan
from mobilesam_srw.engine.schedule import warmup_cosine
from mobilesam_srw.engine.weighting import item_weights
from mobilesam_srw.losses import feature_mse
from mobilesam_srw.sam.teachers.sam_vit import SAM_CONFIGS, build_sam
from mobilesam_srw.sam.transforms import normalize_padded, pad_image, valid_patch_mask
from mobilesam_srw.srw import average_similarity, reweighted_mean


def embedding_loss(student, teacher, tau, normalizer="softmax", avesim=None):
    """The SAM task's objective as the engine forms it: Eq. 6 per image over its patches, then the mean."""
    if avesim is None:
        avesim = average_similarity(teacher.flatten(2).transpose(1, 2))
    weights = item_weights(avesim, tau, normalizer)
    return reweighted_mean(feature_mse(student, teacher, dim=1), weights), weights


def test_mse_loss_is_plain_mse():
    student, teacher = torch.randn(3, 256, 8, 8), torch.randn(3, 256, 8, 8)
    loss, weights = embedding_loss(student, teacher, tau=0.5, normalizer="uniform")
    torch.testing.assert_close(loss, F.mse_loss(student, teacher))
    torch.testing.assert_close(weights, torch.full((3, 64), 1 / 64))


def test_srw_loss_weights_each_image_by_its_own_patches():
    student, teacher = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    loss, weights = embedding_loss(student, teacher, tau=0.1)
    avesim = average_similarity(teacher.flatten(2).transpose(1, 2))
    for image in range(2):  # one image's weights do not depend on the other image
        alone, _ = embedding_loss(student[image:image + 1], teacher[image:image + 1], tau=0.1)
        expected = torch.softmax(-avesim[image] / 0.1, dim=0)
        torch.testing.assert_close(weights[image], expected)
        per_patch = ((student[image] - teacher[image]) ** 2).mean(0).flatten()
        torch.testing.assert_close(alone, (expected * per_patch).sum())
    stored, _ = embedding_loss(student, teacher, tau=0.1, avesim=avesim)
    torch.testing.assert_close(stored, loss)


def test_ignore_padding_is_softmax_over_image_patches():
    avesim = torch.rand(1, 16)
    valid = valid_patch_mask(torch.tensor([[40, 20]]), side=4)  # 3 rows x 2 columns of 16-px patches
    assert valid.view(4, 4)[:3, :2].all() and valid.sum() == 6
    weights = item_weights(avesim, 0.5, "softmax", valid)
    assert (weights[~valid] == 0).all()
    torch.testing.assert_close(weights[valid], torch.softmax(-avesim[valid] / 0.5, dim=0))


def test_normalize_padded_equals_sam_preprocess():
    sam = build_sam(SAM_CONFIGS["tiny"])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((256, 170), (100, 256))]
    padded = torch.stack([pad_image(image, 256) for image in images])
    sizes = torch.tensor([image.shape[:2] for image in images])
    ours = normalize_padded(padded, sizes)
    for index, image in enumerate(images):
        reference = sam.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0]
        torch.testing.assert_close(ours[index], reference)


def test_batch_plan_splits_global_batches_across_ranks_and_micro_steps():
    single = BatchPlan(num_samples=23, batch_size=4, world_size=1, grad_accum=2, seed=3)
    ranks = [list(BatchPlan(23, 2, world_size=2, grad_accum=2, seed=3).micro_batches(0, rank)) for rank in (0, 1)]
    assert single.global_batch == 8 and single.steps_per_epoch == 2
    for step in range(2):
        global_batch = sum(list(single.micro_batches(0, 0))[2 * step:2 * step + 2], [])
        from_ranks = sum((ranks[r][2 * step + m] for m in range(2) for r in range(2)), [])
        assert sorted(global_batch) == sorted(from_ranks)
    seen = sum(list(single.micro_batches(0, 0)), [])
    assert len(set(seen)) == 16  # no sample twice in an epoch
    assert list(single.micro_batches(0, 0, start_step=1)) == list(single.micro_batches(0, 0))[2:]
    assert single.permutation(0).tolist() != single.permutation(1).tolist()


def test_warmup_cosine():
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == 0.1 and factor(9) == 1.0 and factor(10) == 1.0
    assert abs(factor(55) - 0.5) < 1e-9 and factor(100) == 0.0


def test_missing_avesim_is_computed_from_the_embedding(tmp_path):
    import webdataset as wds

    from mobilesam_srw import shards
    from mobilesam_srw.sam.data import EmbeddingShards
    from mobilesam_srw.shards import index_shards

    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((256, 4, 4)).astype(np.float32)
    sample = shards.encode_sample("sa_1", shards.encode_image(np.zeros((64, 48, 3), np.uint8)), embedding,
                                  np.zeros((4, 4), np.float32), {"original_size": [64, 48], "input_size": [64, 48]}, "fp32")
    del sample[shards.AVESIM_FIELD]
    with wds.TarWriter(str(tmp_path / "shard-000000.tar"), encoder=False) as writer:
        writer.write(sample)
    item = EmbeddingShards(index_shards([str(tmp_path / "shard-000000.tar")]), input_size=64)[0]
    expected = average_similarity(torch.from_numpy(embedding).flatten(1).T)
    torch.testing.assert_close(item["avesim"], expected)
    assert item["image"].shape == (3, 64, 64) and item["size"].tolist() == [64, 48]


def test_no_weight_decay_on_norms_biases_and_attention_biases():
    from mobilesam_srw.engine.optim import decay_groups
    from mobilesam_srw.sam.student import build_student

    student = build_student("tinyvit-micro", 256)
    names = {id(p): n for n, p in student.named_parameters()}
    groups = decay_groups(student, 0.01)
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    exempt = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | exempt == set(names.values()) and not decayed & exempt
    assert any("attention_biases" in n for n in exempt) and not any("attention_biases" in n for n in decayed)
    assert all(not n.endswith(".bias") and student.get_parameter(n).ndim > 1 for n in decayed)
    assert any(n.endswith("qkv.weight") for n in decayed)
