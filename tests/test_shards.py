"""The shard format: embedding encodings, no pickles, unknown fields ignored."""

import io
import json
import pickle

import numpy as np
import pytest

from mobilesam_srw import shards


def embedding(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((256, 16, 16)) * rng.uniform(0.1, 3, (1, 16, 16))).astype(np.float32)


def test_int8_layout_and_error():
    original = embedding()
    fields = shards.encode_embedding(original, "int8")
    quantized = shards.load_npy(fields[shards.EMBEDDING_FIELD])
    scale = shards.load_npy(fields[shards.SCALE_FIELD])
    assert quantized.dtype == np.int8 and quantized.shape == (256, 16, 16)
    assert scale.dtype == np.float32 and scale.shape == (16, 16)
    np.testing.assert_allclose(scale, np.abs(original).max(axis=0) / 127, rtol=1e-6)
    assert np.abs(quantized).max() == 127
    decoded = shards.decode_embedding(fields)
    np.testing.assert_allclose(decoded, quantized.astype(np.float32) * scale[None])
    assert np.abs(decoded - original).max() <= scale.max() / 2 + 1e-6  # half a step at most
    relative_l2 = np.linalg.norm(decoded - original) / np.linalg.norm(original)
    assert relative_l2 < 0.01


def test_int8_zero_patch_and_float_dtypes():
    original = embedding()
    original[:, 3, 4] = 0
    decoded = shards.decode_embedding(shards.encode_embedding(original, "int8"))
    assert np.isfinite(decoded).all() and (decoded[:, 3, 4] == 0).all()
    np.testing.assert_array_equal(shards.decode_embedding(shards.encode_embedding(original, "fp32")), original)
    fp16 = shards.decode_embedding(shards.encode_embedding(original, "fp16"))
    np.testing.assert_array_equal(fp16, original.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="dtype"):
        shards.encode_embedding(original, "bf16")


def test_object_arrays_are_never_unpickled():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        shards.load_npy(buffer.getvalue())


def test_decode_ignores_unknown_fields(tiny_shards):
    import webdataset as wds

    raw = next(iter(wds.DataPipeline(wds.SimpleShardList(shards.shard_paths([tiny_shards])), wds.tarfile_to_samples())))
    raw["evil.pyd"] = pickle.dumps(object())
    sample = shards.decode_sample(raw)
    assert sample.key == raw["__key__"] and json.loads(raw["json"])["key"] == sample.key


def test_shard_paths_expand_globs_and_folders(tiny_shards):
    by_folder = shards.shard_paths([tiny_shards])
    assert len(by_folder) == 3
    assert shards.shard_paths([str(tiny_shards / "shard-*.tar")]) == by_folder


def test_png_and_old_jpg_shards_read_alike(tmp_path):
    """A PNG sample (the default) reads back bit for bit; a shard of an older precompute (``<key>.jpg``) still reads."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    meta = {"original_size": [128, 96], "input_size": [64, 48]}
    avesim = np.zeros((16, 16), np.float32)
    path = tmp_path / "shard-000000.tar"
    with wds.TarWriter(str(path), encoder=False) as writer:
        writer.write(shards.encode_sample("new", shards.encode_image(image, "png"), embedding(), avesim, meta, "fp16",
                                          "png"))
        writer.write(shards.encode_sample("old", shards.encode_image(image), embedding(), avesim, meta, "fp16"))
    indexed = shards.index_shards([str(path)])
    assert [sorted(set(entry) & {"png", "jpg"}) for entry in indexed] == [["png"], ["jpg"]]
    new, old = (shards.read_indexed(entry) for entry in indexed)
    np.testing.assert_array_equal(new.image, image)
    assert old.image.shape == image.shape and not np.array_equal(old.image, image)  # lossy, still read
    assert [s.key for s in shards.iterate_shards([str(path)])] == ["new", "old"]
    assert shards.image_format_name("jpeg") == "jpg" and shards.encode_image(image, "jpeg")[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="image_format"):
        shards.encode_image(image, "webp")
