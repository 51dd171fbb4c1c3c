"""Hostile input to ``srw-clip`` and ``srw-cls``, class by class (issue 13), through the CLI run in process:
every bad value, file or record is one line and exit code 2 (before any folder is made where it is a value),
one writer per folder, nothing read is trusted (NaN or inf embeddings and outputs, wrong shapes, malformed
manifests, shards, student files and run folders), and a killed precompute's leftovers are removed on rerun.

The SAM path's faults are tried in test_faults.py; the engine's resume and leftovers in test_engine.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from conftest import assert_one_line_error, run_in_process

open_clip = pytest.importorskip("open_clip")

from mobilesam_srw import shards  # noqa: E402
from mobilesam_srw.clip import shards as clip_shards  # noqa: E402
from mobilesam_srw.clip import teacher_record, zeroshot  # noqa: E402
from mobilesam_srw.clip.checkpoint import student_record  # noqa: E402
from mobilesam_srw.clip.student import build_clip_student  # noqa: E402
from mobilesam_srw.clip.teacher import TeacherIdentity  # noqa: E402
from mobilesam_srw.clip.teacher_record import identity_from_dict  # noqa: E402
from mobilesam_srw.cls.config import ClsTrainConfig  # noqa: E402
from mobilesam_srw.cls.train import train  # noqa: E402
from mobilesam_srw.data_prep import writer  # noqa: E402
from mobilesam_srw.data_prep.clip import img2dataset  # noqa: E402
from mobilesam_srw.data_prep.clip import precompute as clip_precompute  # noqa: E402
from mobilesam_srw.data_prep.clip.sample_data import (  # noqa: E402
    CLASSNAMES_FILE,
    write_sample_image_folder,
    write_sample_img2dataset,  # noqa: E402
)
from mobilesam_srw.data_prep.sources import ImageLimits  # noqa: E402
from mobilesam_srw.engine import checkpoint  # noqa: E402
from mobilesam_srw.errors import SrwError  # noqa: E402
from mobilesam_srw.lock import output_lock  # noqa: E402

STUDENT = "timm:test_vit"  # a 0.3M-parameter timm ViT
CPU = ["--workers", "0", "--no-progress", "--device", "cpu"]
CLS_TEACHER, CLS_STUDENT = "cnn_digits_teacher", "cnn_digits_student"


class Evil:
    """A pickle payload: unpickling it would call ``print`` (nothing may unpickle it)."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def clip(*args) -> object:
    """``srw-clip ARGS`` in this process."""
    return run_in_process(*args, program="srw-clip")


def cls(*args) -> object:
    return run_in_process(*args, program="srw-cls")


# --- shared data: img2dataset tars, their shards (random ViT-B-32), a student file, an ImageFolder --------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clipfaults")
    write_sample_img2dataset(root / "tars", 6, images_per_tar=4, max_side=160, faults=True)
    write_sample_image_folder(root / "folder", images_per_class=1, max_side=160, photos=("coffee", "rocket"))
    (root / "templates.txt").write_text("a photo of a {}.\n")
    (root / "a_file").write_text("not a folder")
    return root


@pytest.fixture(scope="module")
def stored(data) -> Path:
    out = data / "shards"
    result = clip("precompute", "--img2dataset", data / "tars", "--out", out, "--random-teacher", "--shard-size", "4",
                  "--batch-size", "4", *CPU)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def manifest(stored) -> dict:
    return json.loads((stored / shards.MANIFEST_NAME).read_text())


@pytest.fixture(scope="module")
def student_file(stored, manifest, data) -> Path:
    """A (random) srw-clip student of the shards' teacher, as training saves it."""
    torch.manual_seed(0)
    module = build_clip_student(STUDENT, manifest["embedding_dim"], tuple(manifest["image_size"]))
    path = data / "run" / checkpoint.STUDENT_FILE
    checkpoint.save(path, student_record(module, STUDENT, manifest["embedding_dim"], manifest["image_size"],
                                         manifest["teacher"], manifest["teacher_checkpoint"], loss="srw"))
    return path


def raw_samples(stored: Path) -> list[dict]:
    samples = clip_shards.index_clip_shards(shards.shard_paths([stored]))
    return [{"__key__": s["__key__"], **{f: span.read() for f, span in s.items() if f != "__key__"}} for s in samples]


def shard_folder(folder: Path, samples: list[dict], manifest: dict) -> Path:
    """``samples`` as one shard with a manifest listing it (the stored folder's teacher and settings)."""
    folder.mkdir(parents=True)
    with wds.TarWriter(str(folder / "shard-000000.tar"), encoder=False) as tar:
        for sample in samples:
            tar.write(sample)
    listed = {**manifest, "shards": [{"name": "shard-000000.tar", "samples": len(samples), "bytes": 0}]}
    (folder / shards.MANIFEST_NAME).write_text(json.dumps(listed))
    return folder


def train_args(shards_folder: Path, out: Path) -> list:
    return ["train", "--shards", shards_folder, "--out", out, "--student", STUDENT, "--batch-size", "6", "--epochs",
            "1", *CPU]


# --- 6. every bad value is one line, before any folder is made ---------------------------------------------

def test_bad_values_and_teacher_files_make_no_folder(data, stored, tmp_path):
    checkpoints = {"empty.pt": b"", "list.pt": [1, 2], "tensor.pt": torch.zeros(3), "pickle.pt": Evil()}
    for name, content in checkpoints.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        elif isinstance(content, Evil):
            (tmp_path / name).write_bytes(pickle.dumps(content))
        else:
            torch.save(content, tmp_path / name)
    precompute = ["precompute", "--img2dataset", data / "tars", *CPU]
    cases = [
        ([*precompute, "--random-teacher", "--teacher", "no-such-model"], "unknown open_clip model"),
        ([*precompute, "--random-teacher", "--pretrained-tag", "no-such-tag"], "has no tag"),
        ([*precompute, "--checkpoint", tmp_path / "empty.pt"], "cannot load ViT-B-32"),
        ([*precompute, "--checkpoint", tmp_path / "list.pt"], "cannot load ViT-B-32"),
        ([*precompute, "--checkpoint", tmp_path / "pickle.pt"], "cannot load ViT-B-32"),
        ([*precompute, "--random-teacher", "--max-file-mb", "nan"], "--max-file-mb must be a finite number"),
        ([*precompute, "--random-teacher", "--device", "bogus"], "--device must be"),
        (["demo", "--train-images", "0", "--no-progress"], "--train-images must be >= 4"),
        (["train", "--shards", stored, "--student", STUDENT, "--lr", "inf", *CPU], "--lr must be a finite number"),
        (["export", "--run", stored, "--format", "onnx", "--opset", "3"], "opset"),
    ]
    for number, (args, message) in enumerate(cases):
        out = tmp_path / f"out{number}"
        assert_one_line_error(clip(*args, "--out", out), message)
        assert not out.exists(), args
    assert_one_line_error(clip("demo", "--out", data / "a_file", "--no-progress"), "exists and is not a folder")
    tars = sorted((data / "tars").iterdir())
    assert_one_line_error(clip(*precompute, "--random-teacher", "--out", data / "tars"), "holds input tars")
    assert sorted((data / "tars").iterdir()) == tars


# --- 1/3. a bad sample is skipped and recorded, whatever goes wrong; no key builds a path -----------------------

def _tar(path: Path, members: list[tuple[str, bytes]], special: bool = False) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        if special:  # links and devices are never opened
            for name, kind in (("link.jpg", tarfile.SYMTYPE), ("device.txt", tarfile.CHRTYPE)):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, "/etc/passwd"
                archive.addfile(info)
    return path


def test_hostile_img2dataset_samples_are_skipped_and_recorded(tmp_path):
    photo = clip_shards.encode_pixels(np.full((48, 64, 3), 90, np.uint8), "jpg")
    strip = clip_shards.encode_pixels(np.zeros((1, 3000, 3), np.uint8), "png")  # 224 x 672000 px once resized
    tar = _tar(tmp_path / "00000.tar", [
        ("000000000.jpg", photo), ("000000000.txt", b"kept"),
        ("000000001.jpg", b""), ("000000001.txt", b"a zero-byte image"),
        ("000000002.jpg", photo), ("000000002.txt", b""),
        ("000000003.jpg", photo), ("000000003.txt", b"ok"), ("000000003.json", b""),
        ("000000004.jpg", photo), ("000000004.txt", b"ok"), ("000000004.json", b"[" * 100_000 + b"]" * 100_000),
        ("000000005.jpg", photo), ("000000005.txt", b"\xff\xfe not UTF-8"),
        ("000000006.jpg", photo[:60]), ("000000006.txt", b"truncated"),
        ("000000007.png", strip), ("000000007.txt", b"a strip"),
        ("x.y.jpg", photo), ("x.y.txt", b"a dotted key"),
        ("../../evil.jpg", photo), ("../../evil.txt", b"escape"),
        ("/abs/evil.jpg", photo), ("/abs/evil.txt", b"absolute"),
        ("k" * 300 + ".jpg", photo), ("k" * 300 + ".txt", b"too long"),
    ], special=True)
    refs, skips = img2dataset.scan_tar(tar)
    reasons = {skip.key: skip.reason for skip in skips}
    assert [ref.key for ref in refs] == [f"{n:09d}" for n in range(8)]
    assert reasons["x"].startswith("unsafe key: a dot") and reasons["k" * 200].startswith("unsafe key")
    assert reasons["../../evil"].startswith("unsafe key") and reasons["/abs/evil"].startswith("unsafe key")
    prepared = clip_precompute.PreparedImageText([(0, ref) for ref in refs],
                                                 lambda image: np.asarray(image.convert("RGB").resize((224, 224))),
                                                 "png", ImageLimits(), (224, 224))
    items = {item["key"]: item.get("skip") for item in (prepared[i] for i in range(len(prepared)))}
    assert items.pop("000000000") is None
    assert {key: reason.split(":")[0] for key, reason in items.items()} == {
        "000000001": "corrupt image", "000000002": "empty caption", "000000003": "malformed json",
        "000000004": "malformed json", "000000005": "caption is not UTF-8", "000000006": "corrupt image",
        "000000007": "aspect ratio"}
    cut = tmp_path / "cut" / "00000.tar"
    cut.parent.mkdir()
    cut.write_bytes(tar.read_bytes()[:1500])
    (tmp_path / "cut" / "00001.tar").write_bytes(b"")
    for path in (cut, tmp_path / "cut" / "00001.tar"):
        assert img2dataset.scan_tar(path)[1][-1].reason.startswith("unreadable tar")


# --- 4. one writer per output folder ----------------------------------------------------------------------------

def test_a_second_writer_is_refused(data, stored, student_file, tmp_path):
    def written() -> dict:
        return {path.name: path.stat().st_mtime_ns for path in stored.iterdir() if path.name != ".srw.lock"}

    before = written()
    with output_lock(stored):  # a precompute still writing these shards
        assert_one_line_error(clip("precompute", "--img2dataset", data / "tars", "--out", stored, "--random-teacher",
                                   "--shard-size", "4", "--batch-size", "4", *CPU), "is in use by another srw job")
    assert written() == before
    busy = tmp_path / "busy"
    with output_lock(busy):
        assert_one_line_error(clip("eval", "--data", data / "folder", "--student", student_file, "--out", busy,
                                   "--classnames", data / "folder" / CLASSNAMES_FILE, "--templates",
                                   data / "templates.txt", "--cache-dir", data / "cache", "--batch-size", "2", *CPU),
                              "is in use by another srw job")
        assert_one_line_error(clip(*train_args(stored, busy)), "is in use by another srw job")
    assert sorted(path.name for path in busy.iterdir()) == []  # nothing written; the lock went with the lock


# --- 5. what a shard holds is not trusted ---------------------------------------------------------------------

def _png(height: int, width: int) -> bytes:
    return clip_shards.encode_pixels(np.zeros((height, width, 3), np.uint8), "png")


@pytest.mark.parametrize("field, value, message", [
    ("emb.npy", shards.npy_bytes(np.full(512, np.nan, np.float16)), "512 of its 512 values are NaN or inf"),
    ("emb.npy", shards.npy_bytes(np.r_[np.zeros(511), np.inf].astype(np.float32)), "1 of its 512 values are NaN"),
    ("emb.npy", shards.npy_bytes(np.zeros(513, np.float16)), "shape [513] is not a stored [512]"),
    ("emb.npy", shards.npy_bytes(np.zeros((2, 512), np.float16)), "shape [2, 512] is not a stored [512]"),
    ("emb.npy", shards.npy_bytes(np.zeros(512, np.int32)), "a int32 array"),
    ("emb.npy", shards.npy_bytes(np.zeros(512, np.complex64)), "a complex64 array"),
    ("png", _png(100, 80), "image: 80x100 px, not the teacher's 224x224"),
    ("png", b"\x89PNG but not really", "image: not a decodable PNG"),
    ("json", b"[1, 2]", "json: a list, not an object"),
    ("json", b"[" * 100_000 + b"]" * 100_000, "recursion"),
])
def test_a_bad_sample_in_a_shard_is_one_line_naming_it(stored, manifest, tmp_path, field, value, message):
    samples = raw_samples(stored)
    samples[1][field] = value
    folder = shard_folder(tmp_path / "shards", samples, manifest)
    result = clip(*train_args(folder, tmp_path / "run"))
    assert_one_line_error(result, f"shard {folder / 'shard-000000.tar'}: sample '{samples[1]['__key__']}': ")
    assert message in result.stderr
    assert not (tmp_path / "run" / checkpoint.STUDENT_FILE).exists()


def _teacher(**changes):
    def change(manifest: dict) -> dict:
        teacher = {key: value for key, value in manifest["teacher"].items() if key not in changes}
        teacher.update({key: value for key, value in changes.items() if value is not ...})
        return {**manifest, "teacher": teacher}
    return change


@pytest.mark.parametrize("change, message", [
    (lambda m: {key: value for key, value in m.items() if key != "teacher"}, "the teacher record is NoneType"),
    (lambda m: {**m, "teacher": ["ViT-B-32"]}, "the teacher record is list"),
    (_teacher(name=...), "the teacher record has no name"),
    (_teacher(image_size="224"), "image_size is \"224\", not [h, w]"),
    (_teacher(image_size=[224, 224, 3]), "image_size is [224, 224, 3]"),
    (_teacher(embed_dim=0), "embed_dim is 0, not a positive integer"),
    (_teacher(embed_dim="512"), "embed_dim is \"512\""),
    (_teacher(std=[0, 0, 0]), "std is [0, 0, 0], not 3 positive"),
    (_teacher(mean=[0.5]), "mean is [0.5], not 3 finite numbers"),
    (_teacher(checkpoint_sha256=...), "has no checkpoint_sha256"),
    (_teacher(checkpoint_sha256="../../etc"), "checkpoint_sha256 is \"../../etc\", not a sha256"),
    (_teacher(surprise=1), "has unknown fields surprise"),
    (lambda m: {**m, "shards": [{"name": "shard-000000.tar", "samples": 60, "bytes": 0}]},
     "holds 6 samples, its manifest.json lists 60"),
    (lambda m: {**m, "shards": [{"name": "shard-000001.tar", "samples": 6, "bytes": 0}]}, "lists 1 shard(s) that"),
    (lambda m: {**m, "shards": []}, "is not listed in"),
    (lambda m: {**m, "shards": "shard-000000.tar"}, "its shards are not a list"),
])
def test_a_malformed_manifest_is_one_line_naming_it(stored, manifest, tmp_path, change, message):
    folder = shard_folder(tmp_path / "shards", raw_samples(stored), manifest)
    (folder / shards.MANIFEST_NAME).write_text(json.dumps(change(json.loads((folder / "manifest.json").read_text()))))
    result = clip(*train_args(folder, tmp_path / "run"))
    assert_one_line_error(result, message)
    assert str(folder) in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_teacher_is_trusted_no_more_than_the_data():
    """A teacher that gives NaN stops precompute with one line naming the samples (its shards would poison
    every later stage)."""
    broken = types.SimpleNamespace(encode=lambda pixels: torch.full((len(pixels), 4), float("nan")),
                                   identity=types.SimpleNamespace(name="ViT-B-32"))
    items = [{"key": f"k{i}", "pixels": np.zeros((8, 8, 3), np.uint8)} for i in range(3)]
    with pytest.raises(SrwError, match="gave NaN or inf embeddings for 3 of 3 samples \\(k0, k1, k2\\)"):
        clip_precompute.teacher_hook(broken, "png", "fp16")(items)
    checked = set(teacher_record._IDENTITY_CHECKS)  # every field of a teacher record is checked when read
    assert checked == {field.name for field in dataclasses.fields(TeacherIdentity)}


# --- 5/6. student files: 0 bytes, a list, a pickle payload, malformed records, NaN weights -------------------

def _record_change(name: str):
    def change(record: dict) -> object:
        model = record["model"]
        return {
            "list": [1, 2], "tensor": torch.zeros(3), "no kind": {**record, "kind": "something else"},
            "no student": {k: v for k, v in record.items() if k != "student"},
            "embed_dim text": {**record, "embed_dim": "512"},
            "image_size text": {**record, "image_size": "ab"},
            "teacher list": {**record, "teacher": [1]},
            "teacher without sha": {**record, "teacher": {k: v for k, v in record["teacher"].items()
                                                         if k != "checkpoint_sha256"}},
            "weights of another model": {**record, "model": {"head.proj.weight": torch.zeros(1)}},
            "weights a list": {**record, "model": [1]},
            "NaN weights": {**record, "model": {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                                for k, v in model.items()}},
        }[name]
    return change


@pytest.mark.parametrize("name, message", [
    ("list", "holds a list"), ("tensor", "holds a Tensor"), ("no kind", "is not a student file"),
    ("no student", "its record's student is None"), ("embed_dim text", "its record's embed_dim is '512'"),
    ("image_size text", "its record's image_size is 'ab'"), ("teacher list", "the teacher record is list"),
    ("teacher without sha", "has no checkpoint_sha256"), ("weights of another model", "does not fit TimmModel"),
    ("weights a list", "expected a state dict"), ("NaN weights", "holds NaN or inf weights"),
])
def test_a_bad_student_file_is_one_line(student_file, tmp_path, name, message):
    bad = tmp_path / "student.pt"
    torch.save(_record_change(name)(torch.load(student_file, weights_only=True)), bad)
    assert_one_line_error(clip("export", "--run", bad, "--out", tmp_path / "export"), message)
    assert not (tmp_path / "export").exists()


def test_unreadable_student_files_are_one_line(student_file, data, tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "payload.pt").write_bytes(pickle.dumps(Evil()))
    for bad, message in ((tmp_path / "empty.pt", "cannot read checkpoint"), (tmp_path / "payload.pt", "cannot read")):
        result = clip("eval", "--data", data / "folder", "--student", student_file, bad, "--out", tmp_path / "e",
                      "--classnames", data / "folder" / CLASSNAMES_FILE, *CPU)
        assert_one_line_error(result, message)
        assert "unpickled!" not in result.stdout + result.stderr
    assert not (tmp_path / "e").exists()


def test_eval_refuses_nan_or_inf_embeddings(student_file, data, tmp_path):
    """Finite weights that overflow: the student's embeddings are inf, which top-1 would silently count."""
    record = torch.load(student_file, weights_only=True)
    record["model"]["head.proj.weight"] = torch.full_like(record["model"]["head.proj.weight"], 3e38)
    torch.save(record, tmp_path / "overflow.pt")
    result = clip("eval", "--data", data / "folder", "--student", tmp_path / "overflow.pt", "--out", tmp_path / "e",
                  "--classnames", data / "folder" / CLASSNAMES_FILE, "--templates", data / "templates.txt",
                  "--cache-dir", data / "cache", "--batch-size", "2", *CPU)
    assert_one_line_error(result, "student overflow gives NaN or inf embeddings for 2 of 2 images")
    assert not (tmp_path / "e" / "summary.json").exists()


def test_a_poisoned_classifier_cache_or_export_folder_is_one_line(data, stored, student_file, manifest, tmp_path):
    identity = identity_from_dict(manifest["teacher"])
    teacher = types.SimpleNamespace(identity=identity)
    key = zeroshot.classifier_key(identity, ["coffee", "rocket"], ["a photo of a {}."])
    cached = tmp_path / "cache" / f"zeroshot-{key[:32]}.npy"
    cached.parent.mkdir()
    np.save(cached, np.full((identity.embed_dim, 2), np.nan, np.float32))
    with pytest.raises(SrwError, match="holds NaN or inf \\(delete it to rebuild\\)"):
        zeroshot.cached_zero_shot_classifier(teacher, ["coffee", "rocket"], ["a photo of a {}."], cached.parent)
    assert_one_line_error(clip("eval", "--data", data / "folder", "--student", student_file, "--out", tmp_path / "e",
                               "--cache-dir", data / "a_file", *CPU), "--cache-dir")
    export = tmp_path / "export"  # an earlier export whose config was damaged: not taken for an export
    export.mkdir()
    (export / "open_clip_config.json").write_text("{" * 50)
    assert_one_line_error(clip("export", "--run", student_file, "--out", export), "is not an earlier export")


# --- 7. leftovers: a killed precompute's temporary files go, and the rerun finishes it identically ------------

def test_a_killed_precompute_is_finished_and_its_leftovers_removed(data, stored):
    complete = {path.name: path.read_bytes() for path in stored.glob("shard-*.tar")}
    (stored / "shard-000001.tar").unlink()  # killed before shard 1's part record: its shard was never finished
    (stored / writer.PARTS_DIR / "shard-000001.json").unlink()
    leftovers = [stored / ".shard-000001.tar.tmp99999", stored / ".teacher_random.safetensors.tmp99999",
                 stored / writer.PARTS_DIR / ".shard-000001.json.tmp99999"]
    for leftover in leftovers:
        leftover.write_bytes(b"half written")
    result = clip("precompute", "--img2dataset", data / "tars", "--out", stored, "--random-teacher", "--shard-size",
                  "4", "--batch-size", "4", *CPU)
    assert result.returncode == 0, result.stderr
    assert not any(leftover.exists() for leftover in leftovers)
    assert {path.name: path.read_bytes() for path in stored.glob("shard-*.tar")} == complete


# --- srw-cls ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cls_runs(tmp_path_factory) -> tuple[Path, Path]:
    """A digits teacher and a KD student (1 epoch each: the faults are in what is read, not in accuracy)."""
    root = tmp_path_factory.mktemp("clsfaults")
    common = dict(dataset="digits", workers=0, progress=False, device="cpu", epochs=1)
    train(ClsTrainConfig(out=root / "teacher", student=CLS_TEACHER, **common))
    train(ClsTrainConfig(out=root / "kd", student=CLS_STUDENT, teacher=CLS_TEACHER, method="kd",
                         teacher_checkpoint=root / "teacher" / checkpoint.STUDENT_FILE, **common))
    return root / "teacher" / checkpoint.STUDENT_FILE, root / "kd"


CLS_EVAL = ["eval", "--dataset", "digits", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("change, message", [
    (lambda r: [r], "holds a list"),
    (lambda r: {**r, "kind": "srw-clip student"}, "is not a finished srw-cls run"),
    (lambda r: {k: v for k, v in r.items() if k != "model_name"}, "its record's model_name is None"),
    (lambda r: {k: v for k, v in r.items() if k != "dataset"}, "its record's dataset is None"),
    (lambda r: {**r, "teacher": 5}, "its record's teacher is 5"),
    (lambda r: {**r, "num_classes": "10"}, "num_classes must be a positive integer"),
    (lambda r: {**r, "model": {"fc.weight": torch.zeros(1)}}, "does not fit DigitsCNN"),
    (lambda r: {**r, "model": {k: v * float("inf") for k, v in r["model"].items()}}, "holds NaN or inf weights"),
])
def test_cls_bad_student_files_are_one_line(cls_runs, tmp_path, change, message):
    bad = tmp_path / "student.pt"
    torch.save(change(torch.load(cls_runs[1] / checkpoint.STUDENT_FILE, weights_only=True)), bad)
    assert_one_line_error(cls(*CLS_EVAL, "--run", bad, "--out", tmp_path / "report"), message)
    assert not (tmp_path / "report").exists()


def test_cls_bad_teachers_make_no_folder_and_nan_outputs_are_refused(cls_runs, tmp_path):
    teacher_file, kd = cls_runs
    record = torch.load(teacher_file, weights_only=True)
    torch.save({**record, "model": {k: v * float("nan") for k, v in record["model"].items()}}, tmp_path / "nan.pt")
    (tmp_path / "payload.pt").write_bytes(pickle.dumps(Evil()))
    for bad, message in ((tmp_path / "nan.pt", "holds NaN or inf weights"), (tmp_path / "payload.pt", "cannot read")):
        assert_one_line_error(cls("train", "--dataset", "digits", "--student", CLS_STUDENT, "--teacher", CLS_TEACHER,
                                  "--teacher-checkpoint", bad, "--method", "kd", "--out", tmp_path / "run", *CPU),
                              message)
        assert not (tmp_path / "run").exists()
    overflowing = {k: v.clone() for k, v in record["model"].items()}
    weights = [k for k, v in overflowing.items() if v.is_floating_point() and v.ndim > 1]
    for key in weights:
        overflowing[key].fill_(1e30)  # finite weights, infinite outputs
    torch.save({**record, "model": overflowing}, tmp_path / "overflow.pt")
    result = cls(*CLS_EVAL, "--run", kd, "--teacher", CLS_TEACHER, "--teacher-checkpoint", tmp_path / "overflow.pt",
                 "--out", tmp_path / "report")
    assert_one_line_error(result, "teacher gives NaN or inf outputs")
    assert not (tmp_path / "report" / "summary.json").exists()


def test_cls_one_writer_per_folder(cls_runs, tmp_path):
    with output_lock(tmp_path / "busy"):
        assert_one_line_error(cls(*CLS_EVAL, "--run", cls_runs[1], "--out", tmp_path / "busy"), "is in use")
        assert_one_line_error(cls("train-teacher", "--dataset", "digits", "--model", CLS_TEACHER, "--out",
                                  tmp_path / "busy", "--epochs", "1", *CPU), "is in use")
    assert sorted(path.name for path in (tmp_path / "busy").iterdir()) == []  # the lock file goes with the lock


def test_cls_a_corrupt_image_in_an_image_folder_is_one_line(tmp_path):
    photo = clip_shards.encode_pixels(np.full((40, 40, 3), 90, np.uint8), "jpg")
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for number in range(2):
                (tmp_path / "data" / split / name / f"{number}.jpg").write_bytes(photo)
    (tmp_path / "data" / "train" / "b" / "1.jpg").write_bytes(photo[:100])  # truncated
    assert_one_line_error(cls("train-teacher", "--dataset", "imagenet", "--data", tmp_path / "data", "--model",
                              "ResNet18", "--batch-size", "4", "--epochs", "1", "--out", tmp_path / "run", *CPU),
                          f"cannot read image {tmp_path / 'data' / 'train' / 'b' / '1.jpg'}: OSError")


def _run_folder(kd: Path, folder: Path, config: object = None, metrics: str | None = None) -> Path:
    folder.mkdir()
    original = json.loads((kd / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config(original) if callable(config) else original))
    (folder / "metrics.jsonl").write_text((kd / "metrics.jsonl").read_text() + (metrics or ""))
    return folder


@pytest.mark.parametrize("config, metrics, message", [
    (lambda c: [c], None, "no validation result"),
    (lambda c: {k: v for k, v in c.items() if k != "dataset"}, None, "dataset is null, not a name"),
    (lambda c: {**c, "tau": "x"}, None, "tau is \"x\", not a finite number"),
    (lambda c: {**c, "tau": float("nan")}, None, "tau is NaN"),
    (lambda c: {**c, "seed": None}, None, "seed is null, not an integer"),
    (lambda c: {**c, "method": 5}, None, "method is 5, not a name"),
    (None, "[1, 2]\n", "is not a JSON object"),
    (None, '{"split": "val", "top1": "x"}\n', "top-1 is \"x\", not a fraction"),
    (None, '{"split": "val", "top1": NaN}\n', "top-1 is NaN"),
    (None, '{"split": "val", "top1": 42}\n', "top-1 is 42"),
    (None, "[" * 100_000 + "]" * 100_000 + "\n", "maximum recursion depth"),
    (None, '{"split": "va', "is not a readable srw-cls run folder"),
])
def test_cls_table_trusts_no_run_folder(cls_runs, tmp_path, config, metrics, message):
    bad = _run_folder(cls_runs[1], tmp_path / "bad", config, metrics)
    assert_one_line_error(cls("table", cls_runs[1], bad), message)


def test_cls_table_and_demo_out(cls_runs, tmp_path):
    assert_one_line_error(cls("table", cls_runs[1], "--out", tmp_path), "is a folder")
    (tmp_path / "a_file").write_text("not a folder")
    assert_one_line_error(cls("demo", "--out", tmp_path / "a_file", "--no-progress"), "exists and is not a folder")
    assert cls("table", cls_runs[1], "--out", tmp_path / "new" / "tables.md").returncode == 0
    assert "| KD |" in (tmp_path / "new" / "tables.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--pairs", "resnet32x4"], "expected teacher:student"),
    (["--pairs", "resnet32x4:../../../elsewhere"], "is not a cifar100 model"),
    (["--pairs", "resnet32x4:resnet8x4;rm -rf ~"], "is not a cifar100 model"),
    (["--dataset", "mnist"], "--dataset must be one of"),
    (["--taus", "nan"], "--taus must be a finite number"),
    (["--taus", "0"], "--taus must be >= 0.0001"),
    (["--seeds", "-1"], "--seeds must be >= 0"),
    (["--methods", "crd"], "invalid choice: 'crd'"),
    (["--gpus", "0"], "--gpus must be >= 1"),
    (["--seeds", "0", "0"], "would share the folder"),
])
def test_cls_sweep_bad_values_make_no_folder(tmp_path, args, message):
    base = {"--data": "/data", "--pairs": "resnet32x4:resnet8x4", "--teacher-dir": "/teachers",
            "--runs-dir": str(tmp_path / "runs"), "--script-dir": str(tmp_path / "sweep")}
    given = {args[0]: args[1:]}
    argv = [item for flag, value in base.items() if flag not in given for item in (flag, value)]
    argv += [item for flag, values in given.items() for item in (flag, *values)]
    assert_one_line_error(cls("sweep", *argv), message)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "runs").exists()
