"""The srw-clip path end to end on a random ViT-B-32 teacher: precompute from img2dataset tars (faults,
resume), training on the engine (2 gloo ranks == 1 process, --online), export round trip, zero-shot eval,
one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from mobilesam_srw import shards  # noqa: E402
from mobilesam_srw.cli import clip_main  # noqa: E402
from mobilesam_srw.clip import shards as clip_shards  # noqa: E402
from mobilesam_srw.clip.checkpoint import load_clip_student  # noqa: E402
from mobilesam_srw.clip.export import load_distilled_clip, read_export_record  # noqa: E402
from mobilesam_srw.clip.task import ClipTask, ClipTrainConfig  # noqa: E402
from mobilesam_srw.clip.teacher import build_clip_teacher, normalize_pixels, pixels_channels_first  # noqa: E402
from mobilesam_srw.clip.teacher_record import rebuild_teacher  # noqa: E402
from mobilesam_srw.clip.zeroshot import build_zero_shot_classifier, zero_shot_logits  # noqa: E402
from mobilesam_srw.data_prep import shard_encoding, writer  # noqa: E402
from mobilesam_srw.data_prep.clip import precompute as clip_precompute  # noqa: E402
from mobilesam_srw.data_prep.clip.img2dataset import discover, iterate_samples  # noqa: E402
from mobilesam_srw.data_prep.clip.sample_data import (  # noqa: E402
    CLASSNAMES_FILE,
    write_sample_image_folder,
    write_sample_img2dataset,
)
from mobilesam_srw.data_prep.plan import make_plan  # noqa: E402
from mobilesam_srw.data_prep.subset import parse_subset  # noqa: E402
from mobilesam_srw.distributed import DistributedContext  # noqa: E402
from mobilesam_srw.engine.checkpoint import load  # noqa: E402
from mobilesam_srw.errors import SrwError  # noqa: E402

from conftest import free_port

TEACHER = "ViT-B-32"
STUDENT = "timm:test_vit"  # a 0.3M-parameter timm ViT: TinyViT-5M costs ~1 s per image on 2 cores
SAMPLES = 6  # valid samples in the tars (plus a corrupt JPEG and one without a caption)
TRAIN = ["--student", STUDENT, "--epochs", "2", "--workers", "0", "--no-progress", "--device", "cpu", "--tau", "0.3"]


def cli(*args: str) -> int:
    return clip_main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clip")
    write_sample_img2dataset(root / "tars", SAMPLES, images_per_tar=4, max_side=160, faults=True)
    return root


@pytest.fixture(scope="module")
def stored(data) -> Path:
    """PNG pixels, fp16 embeddings, a random teacher saved beside them; 2 shards of 4 planned samples."""
    out = data / "shards"
    assert cli("precompute", "--img2dataset", data / "tars", "--out", out, "--random-teacher", "--shard-size", "4",
               "--batch-size", "3", "--workers", "0", "--device", "cpu", "--no-progress") == 0
    return out


@pytest.fixture(scope="module")
def teacher(stored):
    return build_clip_teacher(TEACHER, stored / "teacher_random.safetensors")


@pytest.fixture(scope="module")
def single_run(stored, data) -> Path:
    run = data / "runs" / "single"
    assert cli("train", "--shards", stored, "--out", run, "--batch-size", "4", *TRAIN) == 0
    return run


def _stored_samples(folder: Path) -> list[clip_shards.ClipSample]:
    return [clip_shards.read_indexed(spans) for spans in clip_shards.index_clip_shards(shards.shard_paths([folder]))]


def _encode(teacher, pixels: list[np.ndarray]) -> torch.Tensor:
    """``model.encode_image`` of stored pixels, normalised as open_clip's preprocessing does."""
    batch = pixels_channels_first(np.stack(pixels), teacher.identity.image_size)
    with torch.no_grad():
        return teacher.model.encode_image(normalize_pixels(batch, teacher.mean, teacher.std)).float()


def test_precompute_stores_the_teacher_pixels_and_embeddings(stored, data, teacher):
    manifest = shards.read_manifest(stored)
    assert manifest["format"] == clip_shards.FORMAT and manifest["samples_written"] == SAMPLES
    assert manifest["teacher"]["checkpoint_sha256"] == teacher.identity.checkpoint_sha256
    assert manifest["teacher"]["random_seed"] == 0 and manifest["image_format"] == "png"
    assert (manifest["image_size"], manifest["embedding_dim"], manifest["embedding_dtype"]) == ([224, 224], 512, "fp16")
    reasons = {skip["key"]: skip["reason"] for skip in manifest["skipped"]}
    assert reasons[f"{SAMPLES:09d}"].startswith("corrupt image") and reasons[f"{SAMPLES + 1:09d}"] == \
        "missing caption (.txt)" and manifest["samples_skipped"] == 2
    samples = _stored_samples(stored)
    originals = {s.key: s for s in iterate_samples([data / "tars"]) if hasattr(s, "image")}
    assert [s.key for s in samples] == sorted(originals)
    for sample in samples:  # lossless: exactly open_clip's preprocessing of the original image, before Normalize
        assert np.array_equal(sample.pixels, teacher.pixels(originals[sample.key].image))
        assert sample.caption == originals[sample.key].caption and sample.embedding.dtype == np.float32
    expected = _encode(teacher, [s.pixels for s in samples])
    stored_embeddings = torch.from_numpy(np.stack([s.embedding for s in samples]))
    torch.testing.assert_close(stored_embeddings, expected.half().float(), atol=2e-3, rtol=2e-3)  # fp16 rounding


@pytest.fixture(scope="module")
def jpeg_stored(stored, data) -> Path:
    """JPEG pixels and fp32 embeddings of the same tars and teacher, in one teacher batch."""
    out = data / "jpeg_shards"
    assert cli("precompute", "--img2dataset", data / "tars", "--out", out, "--checkpoint",
               stored / "teacher_random.safetensors", "--image-format", "jpg", "--dtype", "fp32", "--batch-size",
               str(SAMPLES), "--workers", "0", "--device", "cpu", "--no-progress") == 0
    return out


def test_jpeg_shards_embed_the_decoded_jpeg(jpeg_stored, stored, teacher):
    out = jpeg_stored
    manifest = shards.read_manifest(out)
    assert manifest["jpeg_quality"] == shards.JPEG_QUALITY and manifest["teacher"] == shards.read_manifest(stored)[
        "teacher"]
    samples = _stored_samples(out)
    lossless = {s.key: s.pixels for s in _stored_samples(stored)}
    assert any(not np.array_equal(s.pixels, lossless[s.key]) for s in samples)  # JPEG changed pixels...
    embeddings = torch.from_numpy(np.stack([s.embedding for s in samples]))
    torch.testing.assert_close(embeddings, _encode(teacher, [s.pixels for s in samples]), atol=1e-5, rtol=1e-5)


def test_precompute_resumes_and_refuses_other_settings(stored, data, monkeypatch):
    out = data / "resumed"
    args = ["--img2dataset", str(data / "tars"), "--out", str(out), "--checkpoint",
            str(stored / "teacher_random.safetensors"), "--shard-size", "4", "--batch-size", "3", "--workers", "0",
            "--device", "cpu", "--no-progress"]
    assert cli("precompute", *args) == 0
    first = {path.name: path.read_bytes() for path in out.glob("shard-*.tar")}
    assert len(first) == 2
    (out / "shard-000001.tar").unlink()  # as if killed before shard 1 was complete
    (out / shards.MANIFEST_NAME).unlink()
    encoded = []
    hook = clip_precompute.teacher_hook

    def counting_hook(*hook_args):
        encode = hook(*hook_args)
        return lambda items: encoded.extend(item["key"] for item in items) or encode(items)

    monkeypatch.setattr(clip_precompute, "teacher_hook", counting_hook)
    assert cli("precompute", *args) == 0
    assert encoded == ["000000004", "000000005"]  # only shard 1's samples ran through the teacher again
    assert {path.name: path.read_bytes() for path in out.glob("shard-*.tar")} == first
    assert shards.read_manifest(out)["samples_written"] == SAMPLES
    with pytest.raises(SrwError, match=r"other settings \(embedding_dtype\)"):
        clip_precompute.run_clip_precompute(clip_precompute.ClipPrecomputeConfig(
            img2dataset=[str(data / "tars")], out=out, checkpoint=stored / "teacher_random.safetensors",
            shard_size=4, dtype="fp32", workers=0, device="cpu", progress=False))


def test_ranks_split_shards_and_skip_complete_ones(stored, data):
    plan = make_plan(discover([data / "tars"]), parse_subset("all"), seed=0, shard_size=3)
    assert plan.num_shards == 3  # 7 planned samples: the corrupt JPEG is found only when decoded
    for rank, mine in ((0, [0, 2]), (1, [1])):  # shard i is rank i % world_size's
        assert shard_encoding.pending_shards(data / "empty", plan, DistributedContext(rank, 2)) == mine
    four = make_plan(discover([data / "tars"]), parse_subset("all"), seed=0, shard_size=4)
    assert shard_encoding.pending_shards(stored, four, DistributedContext(0, 2)) == []  # complete: never redone


@pytest.mark.slow
def test_two_gloo_ranks_train_as_one_process(stored, data, single_run):
    """2 ranks x batch 2 give the steps of 1 process x batch 4: SRW weights over the global batch, DDP."""
    ranks_run = data / "runs" / "ranks"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                             str(free_port()), "-m", "mobilesam_srw.clip", "train", "--shards", str(stored), "--out",
                             str(ranks_run), "--batch-size", "2", *TRAIN], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    single, ranks = load(single_run / "student.pt"), load(ranks_run / "student.pt")
    assert single["teacher"]["checkpoint_sha256"] == ranks["teacher"]["checkpoint_sha256"]
    for name, value in single["model"].items():  # AdamW turns float noise in near-zero gradients into lr-sized steps
        torch.testing.assert_close(ranks["model"][name], value, atol=1e-4, rtol=1e-3)
    lines = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
             for run in (single_run, ranks_run)]
    for key in ("loss", "srw_weight_max", "srw_tail_weight"):
        np.testing.assert_allclose([line[key] for line in lines[1]], [line[key] for line in lines[0]], rtol=1e-4)
    assert all(line["srw_tail_weight"] > 0.25 for line in lines[0])  # SRW moved weight to the low-avesim quarter


def test_online_targets_are_the_teacher_on_the_stored_pixels(jpeg_stored, data, teacher):
    config = ClipTrainConfig(shards=[str(jpeg_stored)], out=data / "unused", student=STUDENT, online=True, batch_size=2,
                             workers=0, device="cpu")
    online, offline = ClipTask(config), ClipTask(ClipTrainConfig(**{**vars(config), "online": False}))
    assert online.teacher.identity.checkpoint_sha256 == teacher.identity.checkpoint_sha256
    items = [offline.train_dataset()[index] for index in range(SAMPLES)]
    batch = {"pixels": torch.stack([item["pixels"] for item in items]),
             "embedding": torch.stack([item["embedding"] for item in items])}
    assert "embedding" not in online.train_dataset()[0]  # --online never reads the stored embeddings
    torch.testing.assert_close(online.targets({"pixels": batch["pixels"]}).data, offline.targets(batch).data,
                               atol=1e-5, rtol=1e-5)


def test_onnx_export_of_the_image_tower(single_run, data, teacher, tmp_path, capsys):
    """The default student (TinyViT-5M + projection) exports and onnxruntime agrees; the tests' tiny timm ViT
    resizes its position embedding with an operator ONNX lacks: one line says so."""
    ort = pytest.importorskip("onnxruntime")
    from mobilesam_srw.clip.student import DEFAULT_CLIP_STUDENT, build_clip_student
    from mobilesam_srw.onnx_export import export_image_encoder_onnx

    torch.manual_seed(0)
    student = build_clip_student(DEFAULT_CLIP_STUDENT, 512, (224, 224)).eval()
    path = export_image_encoder_onnx(student, (224, 224), tmp_path / "image_encoder.onnx", output_name="image_embeds")
    pixels = pixels_channels_first(np.stack([s.pixels for s in _stored_samples(data / "shards")[:2]]), (224, 224))
    image = normalize_pixels(pixels, teacher.mean, teacher.std)
    got = ort.InferenceSession(str(path)).run(None, {"images": image.numpy()})[0]  # batch 2: the axis is dynamic
    with torch.no_grad():
        np.testing.assert_allclose(got, student(image).numpy(), atol=1e-4, rtol=0)
    assert cli("export", "--run", single_run, "--out", tmp_path / "onnx", "--format", "onnx") == 2
    assert "cannot be exported to ONNX" in capsys.readouterr().err


def test_export_round_trip(single_run, data, teacher):
    out = data / "export"
    assert cli("export", "--run", single_run, "--out", out) == 0
    record = read_export_record(out)
    assert record["student"] == STUDENT and record["loss"] == "srw" and record["tau"] == 0.3
    model = load_distilled_clip(out, teacher_name=TEACHER)
    student, _ = load_clip_student(single_run)
    pixels = pixels_channels_first(np.stack([s.pixels for s in _stored_samples(data / "shards")[:2]]), (224, 224))
    image = normalize_pixels(pixels, teacher.mean, teacher.std)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(image), student(image), atol=1e-6, rtol=0)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    names, templates = ["cat", "coffee"], ["a photo of a {}."]
    assert torch.equal(build_zero_shot_classifier(model, tokenizer, names, templates),
                       build_zero_shot_classifier(teacher.model, teacher.tokenizer, names, templates))


def test_zero_shot_eval_on_a_tiny_image_folder(single_run, data, teacher):
    folder = write_sample_image_folder(data / "imagefolder", images_per_class=1, seed=7, max_side=160,
                                       photos=("astronaut", "chelsea", "coffee", "rocket"))
    (data / "templates.txt").write_text("a photo of a {}.\n")
    student_file = data / "runs" / "other.pt"  # a second student: the single run's file under another name
    student_file.write_bytes((single_run / "student.pt").read_bytes())
    out = data / "eval"
    assert cli("eval", "--data", folder, "--student", single_run, student_file, "--out", out, "--classnames",
               folder / CLASSNAMES_FILE, "--templates", data / "templates.txt", "--cache-dir", data / "cache",
               "--band-size", "4", "--batch-size", "3", "--workers", "0", "--device", "cpu", "--no-progress") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["classes"] == 4 and summary["templates"] == 1
    classnames = (folder / CLASSNAMES_FILE).read_text().splitlines()
    classifier = build_zero_shot_classifier(teacher.model, teacher.tokenizer, classnames, ["a photo of a {}."])
    images = sorted(folder.glob("*/*.jpg"))
    labels = torch.tensor([sorted(p.name for p in folder.iterdir() if p.is_dir()).index(p.parent.name) for p in images])
    pixels = pixels_channels_first(np.stack([teacher.pixels(open_image(p)) for p in images]), (224, 224))
    student, _ = load_clip_student(single_run)
    with torch.no_grad():
        features = {"teacher": teacher.encode(pixels),
                    "student": student(normalize_pixels(pixels, teacher.mean, teacher.std))}
    predictions = {name: zero_shot_logits(f, classifier).argmax(dim=1) for name, f in features.items()}
    top1 = {name: 100.0 * (p == labels).float().mean().item() for name, p in predictions.items()}
    assert summary["teacher"]["top1"] == pytest.approx(top1["teacher"])
    first, second = summary["runs"]
    assert first["top1"] == pytest.approx(top1["student"]) and second["top1"] == first["top1"]
    assert first["agreement"] == pytest.approx(100.0 * (predictions["student"] == predictions["teacher"]).float()
                                               .mean().item())
    assert summary["delta"]["top1"] == 0 and summary["teacher"]["checkpoint_sha256"]
    assert list(first["bands"]) == ["1-1", "2-2", "3-3", "4-4"] and sum(first["band_counts"].values()) == 4
    table = (out / "table.md").read_text()
    assert "| Δ (other - single) | +0.00 |" in table and "| single |" in table
    assert len(list((data / "cache").glob("zeroshot-*.npy"))) == 1  # the classifier is cached for the next run
    assert len((out / "predictions.csv").read_text().splitlines()) == 5


def open_image(path: Path):
    from torchvision.datasets.folder import pil_loader

    return pil_loader(str(path))


def test_one_line_errors(stored, data, single_run, capsys):
    def error_of(*args) -> str:
        """The error line of a command that must fail with exit code 2 (progress lines may come before it)."""
        assert cli(*args) == 2
        err = capsys.readouterr().err
        error = err.strip().splitlines()[-1]
        assert "Traceback" not in err and error.startswith(f"srw-clip {args[0]}: error: "), err
        return error

    assert "--random-teacher" in error_of("precompute", "--img2dataset", data / "tars", "--out", data / "x")
    assert "no .tar files" in error_of("precompute", "--img2dataset", data, "--out", data / "x", "--random-teacher")
    (data / "sam_out").mkdir()
    (data / "sam_out" / writer.RUN_FILE).write_text(json.dumps({"teacher": {"type": "tiny"}, "input_size": 256}))
    assert "another kind of precompute output" in error_of(
        "precompute", "--img2dataset", data / "tars", "--out", data / "sam_out", "--random-teacher")
    assert not (data / "sam_out" / "teacher_random.safetensors").exists()  # nothing written into a foreign folder
    assert "no shards match" in error_of("train", "--shards", data / "nothing", "--out", data / "y", *TRAIN)
    assert "already holds a run" in error_of("train", "--shards", stored, "--out", single_run, "--batch-size", "4",
                                             *TRAIN)
    assert "unknown CLIP student" in error_of("train", "--shards", stored, "--out", data / "y", "--student", "vit_q")
    assert "--teacher-checkpoint goes with --online" in error_of(
        "train", "--shards", stored, "--out", data / "y", "--teacher-checkpoint", stored / "teacher_random.safetensors")
    assert "cannot load ViT-B-32" in error_of("export", "--run", single_run, "--out", data / "z",
                                              "--teacher-checkpoint", data / "tars" / "00000.tar")
    recorded = load(single_run / "student.pt")["teacher"]
    with pytest.raises(SrwError, match="not the teacher's checkpoint"):  # a file other than the recorded one
        rebuild_teacher({**recorded, "checkpoint_sha256": "0" * 64}, None, stored / "teacher_random.safetensors")
    torch.save({"student": "tinyvit-5m", "img_size": 1024, "model": {}}, data / "sam_student.pt")  # srw-sam's
    assert "not a student file" in error_of("export", "--run", data / "sam_student.pt", "--out", data / "z")
    not_imagenet = write_sample_image_folder(data / "folder2", images_per_class=1, photos=("coffee", "rocket"))
    assert "pass --classnames" in error_of("eval", "--data", not_imagenet, "--student", single_run, "--out",
                                           data / "e", "--device", "cpu")
    (data / "sam_like").mkdir()  # a srw-sam shard folder
    (data / "sam_like" / "shard-000000.tar").write_bytes((stored / "shard-000000.tar").read_bytes())
    (data / "sam_like" / "manifest.json").write_text(json.dumps({"format_version": 1}))
    assert "not srw-clip shards" in error_of("train", "--shards", data / "sam_like", "--out", data / "y", *TRAIN)
    broken = data / "broken"  # a shard whose first image lost its bytes
    broken.mkdir()
    for name in ("manifest.json", "shard-000001.tar"):  # every shard the manifest lists is there
        (broken / name).write_bytes((stored / name).read_bytes())
    shard = bytearray((stored / "shard-000000.tar").read_bytes())
    with tarfile.open(stored / "shard-000000.tar") as archive:
        member = archive.getmember("000000000.png")
    shard[member.offset_data : member.offset_data + member.size] = bytes(member.size)
    (broken / "shard-000000.tar").write_bytes(bytes(shard))
    assert "sample '000000000': image" in error_of("train", "--shards", broken, "--out", data / "y", "--batch-size",
                                                   "4", *TRAIN)
