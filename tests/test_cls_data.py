"""CIFAR readers (python and binary formats, folders and archives), ImageNet folders, digits."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mobilesam_srw.cls.data import DATASETS, build_datasets, cifar, read_cifar
from mobilesam_srw.cls.data.cifar import CIFAR100_MEAN, CIFAR100_STD
from mobilesam_srw.errors import SrwError


class Python2StylePickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes, as in the published CIFAR files (read back as
    ``str`` with ``encoding="latin1"``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string


def _py2(value):
    """Python 2's view of the content: ``str`` keys and strings were byte strings."""
    if isinstance(value, dict):
        return {_py2(k): _py2(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py2(v) for v in value]
    return value.encode("latin1") if isinstance(value, str) else value


def py2_pickle(content: dict) -> bytes:
    """Bytes laid out as cPickle protocol 2 under Python 2 and NumPy 1 wrote the CIFAR files."""
    stream = io.BytesIO()
    Python2StylePickler(stream, protocol=2).dump(_py2(content))
    return stream.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def tiny_split(count: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, num_classes, count)]


def write_cifar100_python(root: Path, train, test) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, (data, labels) in (("train", train), ("test", test)):
        content = {"filenames": [f"img_{i}.png" for i in range(len(labels))], "batch_label": f"{name} batch",
                   "fine_labels": labels, "coarse_labels": [v // 5 for v in labels], "data": data}  # fmt: skip
        (folder / name).write_bytes(py2_pickle(content))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return folder


def write_cifar100_binary(root: Path, train, test) -> Path:
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    for name, (data, labels) in (("train.bin", train), ("test.bin", test)):
        label_bytes = np.array([[v // 5, v] for v in labels], dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([label_bytes, data], axis=1).tobytes())
    (folder / "fine_label_names.txt").write_text("".join(f"fine{i}\n" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("".join(f"c{i}\n" for i in range(20)))
    return folder


def write_cifar10(root: Path, kind: str, batches: list, test) -> Path:
    folder = root / ("cifar-10-batches-py" if kind == "python" else "cifar-10-batches-bin")
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (data, labels) in zip(names, [*batches, test]):
        if kind == "python":
            (folder / name).write_bytes(py2_pickle({"batch_label": name, "labels": labels, "data": data}))
        else:
            records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1)
            (folder / f"{name}.bin").write_bytes(records.tobytes())
    label_names = [f"class{i}" for i in range(10)]
    if kind == "python":
        (folder / "batches.meta").write_bytes(py2_pickle({"label_names": label_names, "num_cases_per_batch": 2}))
    else:
        (folder / "batches.meta.txt").write_text("\n".join(label_names) + "\n\n")
    return folder


def make_archive(folder: Path, archive: Path) -> str:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.fixture
def cifar100_splits():
    return tiny_split(6, 100, seed=0), tiny_split(4, 100, seed=1)


def _as_images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data.reshape(-1, 3, 32, 32))


def test_cifar100_python_folder(tmp_path, cifar100_splits):
    train, test = cifar100_splits
    write_cifar100_python(tmp_path, train, test)
    data = read_cifar(tmp_path, "cifar100")
    assert torch.equal(data.train.images, _as_images(train[0]))
    assert data.train.labels.tolist() == train[1] and data.test.labels.tolist() == test[1]
    assert data.class_names[:2] == ["fine0", "fine1"] and len(data.class_names) == 100

    train_set, test_set, num_classes = build_datasets("cifar100", tmp_path)
    assert (len(train_set), len(test_set), num_classes) == (6, 4, 100)
    item = test_set[2]
    assert set(item) == {"image", "label", "index", "key"}
    assert (item["label"], item["index"], item["key"]) == (test[1][2], 2, "cifar100/test/00002")
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    expected = (_as_images(test[0])[2].float() / 255 - mean) / std  # evaluation: normalise only
    assert torch.allclose(item["image"], expected, atol=1e-6)
    augmented = train_set[0]["image"]
    assert augmented.shape == (3, 32, 32) and augmented.dtype == torch.float32
    batch = next(iter(DataLoader(train_set, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].tolist() == train[1][:4]
    assert batch["key"][1] == "cifar100/train/00001"


def test_cifar100_archive_checks_md5(tmp_path, monkeypatch, cifar100_splits):
    train, test = cifar100_splits
    folder = write_cifar100_python(tmp_path / "extracted", *cifar100_splits)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    md5 = make_archive(folder, data_dir / "cifar-100-python.tar.gz")
    with pytest.raises(SrwError, match=r"MD5 [0-9a-f]{32} differs from the official archive's eb9058c3"):
        read_cifar(data_dir, "cifar100")  # our tiny archive is not the official one
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", {**cifar.ARCHIVE_MD5, "cifar-100-python.tar.gz": md5})
    data = read_cifar(data_dir, "cifar100")
    assert torch.equal(data.test.images, _as_images(test[0])) and data.train.labels.tolist() == train[1]
    assert read_cifar(data_dir / "cifar-100-python.tar.gz", "cifar100").train.labels.tolist() == train[1]


def test_cifar100_binary_folder_and_archive_match_python(tmp_path, monkeypatch, cifar100_splits):
    python = read_cifar(write_cifar100_python(tmp_path / "py", *cifar100_splits), "cifar100")
    folder = write_cifar100_binary(tmp_path / "bin", *cifar100_splits)
    binary = read_cifar(tmp_path / "bin", "cifar100")
    assert torch.equal(binary.train.images, python.train.images)
    assert torch.equal(binary.test.labels, python.test.labels)  # the fine label byte
    assert binary.class_names == python.class_names
    data_dir = tmp_path / "archive"
    data_dir.mkdir()
    md5 = make_archive(folder, data_dir / "cifar-100-binary.tar.gz")
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", {**cifar.ARCHIVE_MD5, "cifar-100-binary.tar.gz": md5})
    assert torch.equal(read_cifar(data_dir, "cifar100").train.images, python.train.images)


@pytest.mark.parametrize("kind", ["python", "binary"])
def test_cifar10_both_formats(tmp_path, monkeypatch, kind):
    batches = [tiny_split(2, 10, seed=i) for i in range(5)]
    test = tiny_split(3, 10, seed=9)
    folder = write_cifar10(tmp_path / "data", kind, batches, test)
    train_set, test_set, num_classes = build_datasets("cifar10", tmp_path / "data")
    assert (len(train_set), len(test_set), num_classes) == (10, 3, 10)
    assert train_set.labels.tolist() == [label for _, labels in batches for label in labels]
    assert torch.equal(train_set.images[4], _as_images(batches[2][0])[0])
    assert train_set.class_names[9] == "class9"
    archive_name = "cifar-10-python.tar.gz" if kind == "python" else "cifar-10-binary.tar.gz"
    md5 = make_archive(folder, tmp_path / archive_name)
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", {**cifar.ARCHIVE_MD5, archive_name: md5})
    assert read_cifar(tmp_path / archive_name, "cifar10").test.labels.tolist() == test[1]


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_foreign_pickled_class_is_refused_not_executed(tmp_path, cifar100_splits):
    folder = write_cifar100_python(tmp_path, *cifar100_splits)
    marker = tmp_path / "executed"
    train, _ = cifar100_splits
    (folder / "train").write_bytes(pickle.dumps({"data": train[0], "fine_labels": RunsShell(marker)}, protocol=4))
    with pytest.raises(SrwError, match=r"train: refused to unpickle (posix|os|nt)\.system") as error:
        read_cifar(tmp_path, "cifar100")
    assert not marker.exists()
    assert "\n" not in str(error.value)
    (folder / "train").write_bytes(pickle.dumps(OrderedDict(data=train[0], fine_labels=train[1]), protocol=4))
    with pytest.raises(SrwError, match=r"refused to unpickle collections\.OrderedDict"):
        read_cifar(tmp_path, "cifar100")


def test_malformed_files_are_refused(tmp_path, cifar100_splits):
    folder = write_cifar100_python(tmp_path / "py", *cifar100_splits)
    (folder / "test").write_bytes(b"\x80\x02 not really a pickle")
    with pytest.raises(SrwError, match="test: not a CIFAR python-format file"):
        read_cifar(folder, "cifar100")
    data, labels = cifar100_splits[1]
    (folder / "test").write_bytes(py2_pickle({"data": data[:, :100], "fine_labels": labels}))
    with pytest.raises(SrwError, match=r"'data' is not a uint8 array of shape \[N, 3072\]"):
        read_cifar(folder, "cifar100")
    (folder / "test").write_bytes(py2_pickle({"data": data, "fine_labels": [*labels[:-1], 100]}))
    with pytest.raises(SrwError, match=r"labels outside 0\.\.99"):
        read_cifar(folder, "cifar100")
    (folder / "meta").unlink()
    with pytest.raises(SrwError, match="missing meta"):
        read_cifar(folder, "cifar100")

    binary = write_cifar100_binary(tmp_path / "bin", *cifar100_splits)
    full = (binary / "train.bin").read_bytes()
    (binary / "train.bin").write_bytes(full[:-1000])
    with pytest.raises(SrwError, match=r"train\.bin: .* not a whole number of 3074-byte records \(truncated\?\)"):
        read_cifar(binary, "cifar100")
    (binary / "train.bin").write_bytes(full)
    archive = tmp_path / "cifar-100-binary.tar.gz"
    archive.write_bytes(b"garbage")
    with pytest.raises(SrwError, match="MD5"):
        read_cifar(archive, "cifar100")


def test_missing_or_unknown_data(tmp_path):
    with pytest.raises(SrwError, match="data folder not found"):
        build_datasets("cifar100", tmp_path / "absent")
    with pytest.raises(SrwError, match=r"no cifar100 data in .*cifar-100-python/, cifar-100-python\.tar\.gz"):
        build_datasets("cifar100", tmp_path)
    with pytest.raises(SrwError, match="unknown data set 'svhn'"):
        build_datasets("svhn", tmp_path)
    with pytest.raises(SrwError, match="needs a data folder"):
        build_datasets("cifar10", None)
    with pytest.raises(SrwError, match="no train/ folder"):
        build_datasets("imagenet", tmp_path)


def test_imagenet_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (30 + 10 * i, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / wnid / f"{wnid}_{i}.JPEG", format="JPEG")
    train, val, num_classes = build_datasets("imagenet", tmp_path)
    assert (len(train), len(val), num_classes) == (4, 4, 2)
    item = val[3]
    assert item["image"].shape == (3, 224, 224) and item["label"] == 1
    assert item["key"] == "val/n01443537/n01443537_1.JPEG" and item["index"] == 3
    assert train[0]["image"].shape == (3, 224, 224)
    (tmp_path / "val" / "n09999999").mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "val" / "n09999999" / "x.png")
    with pytest.raises(SrwError, match="different class folders .*n09999999"):
        build_datasets("imagenet", tmp_path)


def test_digits_split_and_forms():
    train, test, num_classes = build_datasets("digits", None)
    assert (len(train), len(test), num_classes) == (1349, 448, 10)
    assert test[0]["image"].shape == (1, 8, 8) and train[0]["image"].shape == (1, 8, 8)
    assert sorted(set(train.keys) | set(test.keys)) == [f"digits/{i:04d}" for i in range(1797)]
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # stratified
    train_again, test_again, _ = build_datasets("digits", None, train_transform=False)
    assert test_again.keys == test.keys and torch.equal(train_again[5]["image"], train_again[5]["image"])
    pixels = torch.stack([train_again[i]["image"] for i in range(len(train_again))])
    assert abs(float(pixels.mean())) < 1e-4 and float(pixels.std()) == pytest.approx(1.0, abs=1e-3)
    big_train, big_test, _ = build_datasets("digits32", None)
    assert big_test[0]["image"].shape == (3, 32, 32) and big_test.keys == test.keys
    assert DATASETS["digits32"].model_family == "cifar" and DATASETS["digits"].in_channels == 1
