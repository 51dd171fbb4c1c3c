"""precompute on your own images: image folders, COCO files, the held-out split, and the pixel rules."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mobilesam_srw import shards
from mobilesam_srw.data_prep.images import decode_rgb
from mobilesam_srw.data_prep.keys import unique_keys
from mobilesam_srw.data_prep.sam.sample_data import write_sample_folder
from mobilesam_srw.data_prep.sample_photos import photo as _photo
from mobilesam_srw.data_prep.sources import BadSample, ImageLimits
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.annotations import coco_annotations, rle_runs, sa1b_annotations
from mobilesam_srw.sam.teachers.sam_vit import TINY_TEACHER_FILE

from conftest import assert_one_line_error, precompute_tiny, read_all, run_cli

SIZE = 128  # the tiny teacher's input size in these tests


def precompute_images(inputs, out: Path, **overrides) -> dict:
    options = dict(input_kind="images", tiny_image_size=SIZE)
    options.update(overrides)
    return precompute_tiny(inputs, out, **options)


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    return np.ascontiguousarray(_photo("coffee")[100 : 100 + height, 200 : 200 + width])


RAMP16 = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 32).astype(np.uint16)  # 0 .. 63968


def exif_rotated_jpeg() -> tuple[bytes, np.ndarray]:
    """A 64 x 32 JPEG whose EXIF says "rotate 90 degrees clockwise to view", and its upright pixels."""
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)  # left half red, right half blue
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()), np.rot90(stored, k=-1)


# ---------------------------------------------------------------- decoding rules


def test_decoding_rules():
    limits = ImageLimits()
    # 16-bit grayscale (PNG and TIFF): scaled by the high byte, never clipped at 255
    for format in ("PNG", "TIFF"):
        rgb = decode_rgb(encoded(Image.fromarray(RAMP16), format), limits)
        assert rgb.dtype == np.uint8 and rgb.shape == (40, 50, 3)
        np.testing.assert_array_equal(rgb[..., 0], (RAMP16 >> 8).astype(np.uint8))
    # EXIF orientation applied
    data, upright = exif_rotated_jpeg()
    rgb = decode_rgb(data, limits)
    assert rgb.shape == upright.shape == (64, 32, 3)
    assert np.abs(rgb.astype(int) - upright).mean() < 8
    # grayscale, RGBA (alpha dropped), palette -> RGB
    image = photo()
    gray = decode_rgb(encoded(Image.fromarray(image).convert("L"), "PNG"), limits)
    assert gray.shape == (48, 64, 3) and (gray[..., 0] == gray[..., 2]).all()
    rgba = np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode_rgb(encoded(Image.fromarray(rgba), "PNG"), limits), image)
    palette = Image.fromarray(image).convert("P")
    np.testing.assert_array_equal(decode_rgb(encoded(palette, "PNG"), limits), np.asarray(palette.convert("RGB")))
    for format in ("BMP", "WEBP", "TIFF"):
        assert decode_rgb(encoded(Image.fromarray(image), format, **({"lossless": True} if format == "WEBP" else {})),
                          limits).tolist() == image.tolist()
    # refused: floating point, oversize, corrupt
    with pytest.raises(BadSample, match="floating-point"):
        decode_rgb(encoded(Image.fromarray(np.ones((4, 4), np.float32)), "TIFF"), limits)
    with pytest.raises(BadSample, match="oversize image: 64x48"):
        decode_rgb(encoded(Image.fromarray(image), "PNG"), ImageLimits(max_pixels=64 * 48 - 1))
    with pytest.raises(BadSample, match="corrupt image"):
        decode_rgb(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, limits)


def test_keys_are_safe_unique_and_independent_of_order():
    names = ["a/scan 1.png", "a/scan_1.png", "a/b.jpg", "a/b.png", "x/y/IMG.001.PNG", ".hidden.jpg",
             "é.jpg", "d" * 300 + ".jpg", "c.jpg"]
    keys = unique_keys(names)
    assert len(set(keys)) == len(keys) and all(shards.is_safe_key(key) for key in keys)
    assert keys[2].startswith("a_b-") and keys[3].startswith("a_b-")  # collisions: a hash of each name
    assert keys[0].startswith("a_scan_1-") and keys[1].startswith("a_scan_1-")
    assert keys[4] == "x_y_IMG_001" and keys[5] == "hidden" and keys[8] == "c" and len(keys[7]) == 128
    assert dict(zip(names, keys)) == dict(zip(names[::-1], unique_keys(names[::-1])))


# ---------------------------------------------------------------- an image folder


def write_tree(root: Path) -> dict[str, str]:
    """Nested folders with every format and the faults; returns relative path -> expected skip reason."""
    image = photo()
    files = {
        "top.jpg": encoded(Image.fromarray(image), "JPEG", quality=95),
        "a/photo.PNG": encoded(Image.fromarray(image), "PNG"),
        "a/b/c/photo.tiff": encoded(Image.fromarray(image), "TIFF"),
        "a/b/photo.webp": encoded(Image.fromarray(image), "WEBP", quality=90),
        "a/b/photo.bmp": encoded(Image.fromarray(image), "BMP"),
        "d/depth16.png": encoded(Image.fromarray(RAMP16), "PNG"),
        "d/rotated.jpg": exif_rotated_jpeg()[0],
        "d/gray.png": encoded(Image.fromarray(image).convert("L"), "PNG"),
        "d/alpha.png": encoded(Image.fromarray(np.dstack([image, np.full(image.shape[:2], 9, np.uint8)])), "PNG"),
        "d/scan 1.png": encoded(Image.fromarray(image[::-1]), "PNG"),
        "d/scan_1.png": encoded(Image.fromarray(image[:, ::-1]), "PNG"),
        "d/notes.txt": b"not an image",
        "d/corrupt.png": b"\x89PNG\r\n\x1a\n" + os.urandom(64),
        "d/noise.png": encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3), np.uint8)),
                               "PNG"),
        "d/wide.png": encoded(Image.fromarray(np.zeros((1, 900, 3), np.uint8)), "PNG"),
        "d/huge.png": encoded(Image.fromarray(np.zeros((400, 300, 3), np.uint8)), "PNG"),
    }
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    os.mkfifo(root / "d" / "pipe.png")  # opening it for reading would block forever
    return {  # found while listing: by relative path; failed when read: by sample key
        "d/notes.txt": "not an image (extension .txt)",
        "d/pipe.png": "not a regular file (a FIFO)",
        "d/noise.png": "oversize file",
        "d_corrupt": "corrupt image",
        "d_wide": "rounds to 0 px",
        "d_huge": "oversize image: 300x400",
    }


def test_image_folder(tmp_path):
    root = tmp_path / "in"
    expected_skips = write_tree(root)
    manifest = precompute_images(root, tmp_path / "out", max_file_bytes=60_000, max_image_pixels=100_000)
    reasons = {skip["key"]: skip["reason"] for skip in manifest["skipped"]}
    assert reasons.keys() == expected_skips.keys()
    for key, reason in expected_skips.items():
        assert reason in reasons[key], (key, reasons[key])
    samples = read_all(tmp_path / "out")
    assert manifest["samples_written"] == len(samples) == 11 and manifest["input"] == {"kind": "images"}
    assert {"top", "a_photo", "a_b_c_photo", "a_b_photo-", "d_depth16", "d_rotated", "d_gray", "d_alpha"} <= {
        key if not key.startswith("a_b_photo-") else "a_b_photo-" for key in samples}
    assert sum(key.startswith("a_b_photo-") for key in samples) == 2  # photo.webp and photo.bmp
    assert sum(key.startswith("d_scan_1-") for key in samples) == 2  # "scan 1.png" and "scan_1.png"
    for key, sample in samples.items():
        assert shards.is_safe_key(key) and sample.meta["source"] == str(root)
        assert max(sample.image.shape[:2]) == SIZE and sample.meta["annotations"] == []
        assert (root / sample.meta["image"]["file_name"]).is_file()
    # EXIF: the upright 32 x 64 image (red above blue after the turn), for the teacher and the stored image
    rotated = samples["d_rotated"]
    assert rotated.meta["original_size"] == [64, 32] and rotated.image.shape[:2] == (SIZE, SIZE // 2)
    assert rotated.image[10, :, 0].mean() > 200 and rotated.image[-10, :, 2].mean() > 200
    # 16-bit: scaled, not saturated (a saturated ramp would be almost all 255)
    depth16 = samples["d_depth16"].image.astype(float)
    assert abs(depth16.mean() - (RAMP16 >> 8).mean()) < 3
    # a rerun with the same arguments has nothing to do
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shard-*.tar")}
    precompute_images(root, tmp_path / "out", max_file_bytes=60_000, max_image_pixels=100_000)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("shard-*.tar")} == before


# ---------------------------------------------------------------- resume and the held-out split


def test_held_out_split_and_resume(tmp_path, capsys):
    folder = tmp_path / "folder"
    write_sample_folder(folder, num_images=8, seed=1, max_side=64)
    out = tmp_path / "out"
    manifest = precompute_images(folder, out, val_fraction=0.25, shard_size=2)
    val = shards.read_manifest(out / "val")
    assert (manifest["split"], val["split"]) == ("train", "val")
    assert manifest["held_out"] == val["held_out"] == {"fraction": 0.25}
    assert (manifest["samples_written"], val["samples_written"]) == (6, 2)
    train_keys, val_keys = set(read_all(out, with_image=False)), set(read_all(out / "val", with_image=False))
    assert not train_keys & val_keys and len(train_keys | val_keys) == 8
    assert set(manifest["held_out_keys"]) == set(val["held_out_keys"]) == val_keys  # recorded in both folders
    (said,) = [line for line in capsys.readouterr().err.splitlines() if "held out" in line]
    assert said.startswith(f"precompute: held out 2 of 8 samples into {out / 'val'}: ")
    assert all(key in said for key in val_keys)
    assert (out / TINY_TEACHER_FILE).read_bytes() == (out / "val" / TINY_TEACHER_FILE).read_bytes()
    assert manifest["teacher"] == val["teacher"]

    # resume: a lost shard of each folder is written again, identical; the others are left alone
    lost = {out / "shard-000001.tar": None, out / "val" / "shard-000000.tar": None}
    for shard in lost:
        lost[shard] = {s.key: s.embedding for s in shards.iterate_shards([str(shard)], with_image=False)}
        shard.unlink()
        (shard.parent / "parts" / f"{shard.stem}.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    precompute_images(folder, out, val_fraction=0.25, shard_size=2)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    for shard, embeddings in lost.items():
        again = {s.key: s.embedding for s in shards.iterate_shards([str(shard)], with_image=False)}
        assert again.keys() == embeddings.keys()
        for key in embeddings:
            np.testing.assert_array_equal(again[key], embeddings[key])
    with pytest.raises(SrwError, match="another --val-fraction or --val-keys"):
        precompute_images(folder, out, val_fraction=0.5, shard_size=2)

    # listed keys, to their own folder
    listed = tmp_path / "val_keys.txt"
    listed.write_text("\n".join(sorted(train_keys)[:3]) + "\n")
    precompute_images(folder, tmp_path / "by_keys", val_keys=listed, val_out=tmp_path / "held_out")
    assert set(read_all(tmp_path / "held_out", with_image=False)) == set(sorted(train_keys)[:3])
    listed.write_text("no_such_key\n")
    with pytest.raises(SrwError, match="--val-keys: 1 listed names are not in the input"):
        precompute_images(folder, tmp_path / "bad", val_keys=listed)
    with pytest.raises(SrwError, match="none are left for training"):
        precompute_images(folder, tmp_path / "bad", val_fraction=0.5, limit=1)
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- COCO


def square(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def write_coco(root: Path) -> tuple[Path, list[dict], dict]:
    """Three images and a COCO file with every kind of annotation and fault; returns the file, the
    valid annotations of image 1 and the expected drop counts."""
    (root / "images" / "sub").mkdir(parents=True)
    image = photo(48, 64)
    (root / "images" / "one.jpg").write_bytes(encoded(Image.fromarray(image), "JPEG", quality=95))
    (root / "images" / "sub" / "two.png").write_bytes(encoded(Image.fromarray(image), "PNG"))
    (root / "images" / "three.jpg").write_bytes(encoded(Image.fromarray(image), "JPEG"))
    mask = np.zeros((48, 64), np.uint8, order="F")
    mask[5:20, 30:50] = 1
    rle = mask_utils.encode(mask)
    uncompressed = {"size": [48, 64], "counts": [int(v) for v in rle_runs(rle["counts"].decode())]}
    valid = [
        {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": [square(4, 4, 10)],
         "bbox": [4, 4, 10, 10], "area": 100},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0,
         "segmentation": {"size": [48, 64], "counts": rle["counts"].decode()}, "bbox": [30, 5, 20, 15]},
        {"id": 3, "image_id": 1, "iscrowd": 0, "segmentation": uncompressed},  # no bbox: computed from the mask
    ]
    broken = [
        {"id": 4, "image_id": 1, "iscrowd": 1, "segmentation": uncompressed, "bbox": [30, 5, 20, 15]},
        {"id": 5, "image_id": 1, "segmentation": {"size": [64, 48], "counts": rle["counts"].decode()}},
        {"id": 6, "image_id": 1, "segmentation": [square(4, 4, 10)], "bbox": [50, 40, 20, 20]},
        {"id": 7, "image_id": 1, "segmentation": [[5, 5, 10, 10, 15, 15]]},  # a line: no pixels
        {"id": 8, "image_id": 1, "segmentation": {"size": [48, 64], "counts": "!!!"}},
        {"id": 9, "image_id": 1, "segmentation": [square(60, 40, 30)]},
        {"id": 10, "image_id": 1, "bbox": [4, 4, 10, 10]},  # a box alone: no mask to score against
        {"id": 11, "image_id": 1, "segmentation": {"size": [48, 64], "counts": rle["counts"].decode()[:-3]}},
        [1, 2, 3],
        {"id": 12, "image_id": 99, "segmentation": [square(4, 4, 10)]},  # names no image
    ]
    dropped = {"crowd region": 1, "rle size differs from the image": 1, "bbox outside the image": 1,
               "empty mask": 1, "bad rle counts": 1, "polygon outside the image": 1, "no segmentation": 1,
               "rle runs do not cover the image": 1}
    coco = {
        "images": [
            {"id": 1, "file_name": "one.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "sub/two.png", "width": 48, "height": 64},  # the size of another image
            {"id": 3, "file_name": "three.jpg", "width": 64, "height": 48},
            {"id": 4, "file_name": "missing.jpg", "width": 64, "height": 48},
            {"id": 5, "file_name": "../one.jpg"},
            {"id": 1, "file_name": "three.jpg"},
            "not an image entry",
        ],
        "annotations": valid + broken,
        "categories": [{"id": 3, "name": "thing"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(coco))
    return path, valid, dropped


def test_coco_annotations_become_validated_sa1b_records(tmp_path):
    coco_file, valid, dropped = write_coco(tmp_path)
    manifest = precompute_images([coco_file], tmp_path / "out", input_kind="coco", image_root=tmp_path / "images")
    samples = read_all(tmp_path / "out")
    assert sorted(samples) == ["one", "three"]
    reasons = [(skip["key"], skip["reason"]) for skip in manifest["skipped"]]
    assert ("missing.jpg", "missing file") in reasons and ("../one.jpg", "file_name leaves the image root") in reasons
    assert ("three.jpg", "duplicate image id 1") in reasons
    assert ("", "malformed image entry (not an object)") in reasons
    assert ("", "2 annotations without the image_id of a listed image") in reasons  # [1, 2, 3] and image 99
    assert any(key == "sub_two" and "the COCO file says 48x64" in reason for key, reason in reasons)
    assert len(reasons) == 6
    assert manifest["input"]["kind"] == "coco" and len(manifest["input"]["coco_sha256"]) == 64
    assert manifest["annotations_dropped"]["by_sample"] == {"one": dropped}
    assert samples["one"].meta["annotations_dropped"] == dropped

    one = samples["one"]
    assert one.meta["image"] == {"image_id": 1, "file_name": "one.jpg", "width": 64, "height": 48}
    annotations = one.meta["annotations"]
    assert [a["id"] for a in annotations] == [1, 2, 3] and samples["three"].meta["annotations"] == []
    masks = [mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
             for a in annotations]
    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(valid[0]["segmentation"], 48, 64)))
    np.testing.assert_array_equal(masks[0], polygon)
    np.testing.assert_array_equal(masks[1], masks[2])
    for annotation, mask in zip(annotations, masks):
        assert annotation["area"] == mask.sum() > 0 and mask.shape == (48, 64)
        x, y, w, h = annotation["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 48 and w > 0 and h > 0
    assert annotations[2]["bbox"] == [30.0, 5.0, 20.0, 15.0] and annotations[0]["category_id"] == 3


def test_annotation_checks():
    size = (10, 12)
    full = mask_utils.encode(np.ones(size, np.uint8, order="F"))["counts"].decode()
    good = {"segmentation": {"size": [10, 12], "counts": full}, "bbox": [0, 0, 12, 10]}
    kept, dropped = sa1b_annotations([good, {**good, "point_coords": [[3.0, 4.0]]}], size)
    assert len(kept) == 2 and not dropped and kept[0]["area"] == 120 and kept[1]["point_coords"] == [[3.0, 4.0]]
    cases = {
        "bad rle size": {"segmentation": {"size": [10], "counts": full}},
        "bad rle counts": {"segmentation": {"size": [10, 12], "counts": [1.5, 2]}},
        "bad segmentation": {"segmentation": "a mask"},
        "bad bbox": {**good, "bbox": [0, 0, 12, float("nan")]},
        "empty bbox": {**good, "bbox": [0, 0, 0, 10]},
        "bad point_coords": {**good, "point_coords": [[1, True]]},
        "point_coords outside the image": {**good, "point_coords": [[13, 4]]},
        "bad polygon": {"segmentation": [[1, 2, 3, 4]]},
        "bad id": {**good, "id": [1]},
    }
    for reason, annotation in cases.items():
        assert sa1b_annotations([annotation], size) == ([], {reason: 1}), reason
    assert coco_annotations([{**good, "iscrowd": 2}], size) == ([], {"bad iscrowd": 1})
    kept, _ = coco_annotations([{**good, "bbox": [-0.5, 0, 12.5, 10]}], size)  # within a pixel: clipped
    assert kept[0]["bbox"] == [0.0, 0.0, 12.0, 10.0]


@pytest.mark.slow
def test_coco_file_faults_stop_before_any_work(tmp_path):
    (tmp_path / "images").mkdir()
    cases = {
        "deep.json": ("[" * 100_000 + "]" * 100_000, "RecursionError"),
        "list.json": ("[]", "is not a COCO file"),
        "broken.json": ("{\"images\": [", "cannot read"),
        "annotations.json": (json.dumps({"images": [], "annotations": {}}), "'annotations' is not a list"),
        "empty.json": (json.dumps({"images": []}), "no COCO images found"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SrwError, match=message):
            precompute_images([tmp_path / name], tmp_path / "out", input_kind="coco", image_root=tmp_path / "images")
    with pytest.raises(SrwError, match="needs --image-root"):
        precompute_images([tmp_path / "list.json"], tmp_path / "out", input_kind="coco")
    assert not (tmp_path / "out").exists()
    assert_one_line_error(run_cli("precompute", "--coco", tmp_path / "deep.json", "--image-root", tmp_path / "images",
                                  "--teacher", "tiny", "--out", tmp_path / "out"), "RecursionError")


# ---------------------------------------------------------------- the domain recipe, end to end


@pytest.mark.slow
def test_domain_recipe_end_to_end(tmp_path):
    """make-sample-data (COCO) -> precompute with a held-out split -> train -> eval --mode gt on the split."""
    data, shard_folder = tmp_path / "data", tmp_path / "shards"
    steps = [
        ("make-sample-data", "--format", "coco", "--out", data, "--images", "5", "--max-side", "96"),
        ("precompute", "--coco", data / "instances.json", "--image-root", data / "images", "--teacher", "tiny",
         "--image-size", SIZE, "--subset", "all", "--val-fraction", "0.4", "--shard-size", "2", "--workers", "0",
         "--out", shard_folder, "--no-progress"),
        ("train", "--shards", shard_folder, "--student", "tinyvit-micro", "--epochs", "1", "--batch-size", "2",
         "--workers", "0", "--out", tmp_path / "run", "--no-progress"),
        ("eval", "--mode", "gt", "--prompt", "box", "--shards", shard_folder / "val", "--student", tmp_path / "run",
         "--out", tmp_path / "report", "--no-progress"),
    ]
    for step in steps:
        result = run_cli(*step)
        assert result.returncode == 0, (step[0], result.stderr[-3000:])
    assert shards.read_manifest(shard_folder / "val")["samples_written"] == 2
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["masks"] > 0
    assert all(value is not None and math.isfinite(value) and 0 <= value <= 100 for value in summary["miou"].values())
