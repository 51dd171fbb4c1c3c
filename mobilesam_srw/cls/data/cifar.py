"""CIFAR-10 and CIFAR-100 from the official files, in either format, extracted or as the archive.

Formats (https://www.cs.toronto.edu/~kriz/cifar.html):

- ``python``: ``cifar-100-python/{train,test,meta}``, ``cifar-10-batches-py/{data_batch_1..5,
  test_batch,batches.meta}``: pickles of dicts holding a uint8 ``data`` array ``[N, 3072]`` and
  label lists. They are read with :class:`CifarUnpickler`, which admits only what these files hold
  (numpy's reconstruction of one uint8 array, never a call that allocates one of a chosen shape); a
  file naming any other global is refused, never executed. Every file is a regular file no larger
  than its published size allows, and holds at most its published number of images
  (:data:`PUBLISHED_IMAGES`) with one integer label each.
- ``binary``: ``cifar-100-binary/{train,test}.bin`` (records of coarse label, fine label, 3072
  pixel bytes), ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` (label, 3072 bytes),
  with label names in text files.

Pixels are stored channel-major (1024 R, 1024 G, 1024 B, rows of 32), read as ``[N, 3, 32, 32]``.
An archive (``cifar-100-python.tar.gz`` ...) must have its published MD5; its members are read
in memory, nothing is extracted.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from torchvision.transforms import v2

from mobilesam_srw.cls.data.items import TensorImageDataset
from mobilesam_srw.errors import SrwError

# Channel statistics of the training sets. CIFAR-100's are mdistiller's; CIFAR-10's are the usual ones.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# MD5 of the official archives (the first two are also torchvision's tgz_md5).
ARCHIVE_MD5 = MappingProxyType(
    {
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
        "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
        "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    }
)

IMAGE_BYTES = 3 * 32 * 32

# Images per file in the published data sets: a file may hold fewer (a subset), never more.
PUBLISHED_IMAGES = MappingProxyType({
    "train": 50_000, "test": 10_000, "train.bin": 50_000, "test.bin": 10_000,
    **{f"data_batch_{i}{suffix}": 10_000 for i in range(1, 6) for suffix in ("", ".bin")},
    "test_batch": 10_000, "test_batch.bin": 10_000,
})
MAX_FILE_OVERHEAD = 1 << 24  # bytes beyond the pixels a file may hold (labels, names, pickle framing)
MAX_NAMES_BYTES = 1 << 20  # label-name files (meta, batches.meta, *.txt)


@dataclass(frozen=True)
class CifarLayout:
    """Where one format of one CIFAR data set keeps its files.

    Attributes:
        folder: the extracted folder's name (also the archive's top folder).
        archive: the official archive's file name.
        kind: ``"python"`` or ``"binary"``.
        train_files, test_files: data files, in order.
        names_file: the label names (a pickle for ``python``, a text file for ``binary``).
        label_field: the dict key of the labels (``python``) or the label byte's offset (``binary``).
        label_bytes: label bytes before each 3072-byte image (``binary``).
        names_field: the dict key of the label names in ``names_file`` (``python``).
    """

    folder: str
    archive: str
    kind: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    names_file: str
    label_field: str | int
    label_bytes: int = 0
    names_field: str = ""


_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

# Per data set, its layouts in the order they are looked for.
LAYOUTS = MappingProxyType(
    {
        "cifar100": (
            CifarLayout(
                folder="cifar-100-python",
                archive="cifar-100-python.tar.gz",
                kind="python",
                train_files=("train",),
                test_files=("test",),
                names_file="meta",
                label_field="fine_labels",
                names_field="fine_label_names",
            ),
            CifarLayout(
                folder="cifar-100-binary",
                archive="cifar-100-binary.tar.gz",
                kind="binary",
                train_files=("train.bin",),
                test_files=("test.bin",),
                names_file="fine_label_names.txt",
                label_field=1,  # byte 0 is the coarse label, byte 1 the fine one
                label_bytes=2,
            ),
        ),
        "cifar10": (
            CifarLayout(
                folder="cifar-10-batches-py",
                archive="cifar-10-python.tar.gz",
                kind="python",
                train_files=_BATCHES,
                test_files=("test_batch",),
                names_file="batches.meta",
                label_field="labels",
                names_field="label_names",
            ),
            CifarLayout(
                folder="cifar-10-batches-bin",
                archive="cifar-10-binary.tar.gz",
                kind="binary",
                train_files=tuple(f"{name}.bin" for name in _BATCHES),
                test_files=("test_batch.bin",),
                names_file="batches.meta.txt",
                label_field=0,
                label_bytes=1,
            ),
        ),
    }
)

NUM_CLASSES = MappingProxyType({"cifar100": 100, "cifar10": 10})


class _ArrayType:
    """What the global ``numpy.ndarray`` stands for while unpickling: an argument of the array
    reconstruction only; calling it (``ndarray(shape, dtype)``, an allocation of any size) is refused."""

    def __init__(self, refuse) -> None:
        self.refuse = refuse

    def __call__(self, *args, **kwargs):
        raise self.refuse(f"a call of numpy.ndarray{args!r}")

    def __repr__(self) -> str:
        return "numpy.ndarray"


class CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python-format files and nothing else.

    The files hold dicts, lists, strings, ints and one uint8 numpy array; the only globals they name
    are numpy's array reconstruction (``numpy.core.multiarray._reconstruct`` in the published
    files, ``numpy._core.multiarray._reconstruct`` when NumPy 2 wrote them), ``numpy.ndarray``
    and ``numpy.dtype``, called exactly as numpy pickles a uint8 array: ``_reconstruct(ndarray,
    (0,), b'b')`` (an empty array that the pickle's data then fills, so its size is the file's) and
    ``dtype('u1', 0, 1)``. Any other global, or any other call of these, raises SrwError before
    anything is allocated or called.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")  # the published files were written by Python 2
        self.source = source
        array_type = _ArrayType(self._refused)
        reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]

        def empty_array(subtype, shape, code):
            if subtype is not array_type or tuple(shape) != (0,) or code not in (b"b", "b"):
                raise self._refused(f"_reconstruct{(subtype, shape, code)!r}")
            return reconstruct(np.ndarray, (0,), b"b")

        def uint8_dtype(name, align=0, copy=1):
            if name not in ("u1", b"u1") or align not in (0, False) or copy not in (1, True):
                raise self._refused(f"dtype{(name, align, copy)!r}")
            return np.dtype("u1")

        self.allowed = {
            ("numpy.core.multiarray", "_reconstruct"): empty_array,
            ("numpy._core.multiarray", "_reconstruct"): empty_array,
            ("numpy", "ndarray"): array_type,
            ("numpy", "dtype"): uint8_dtype,
        }

    def _refused(self, what: str) -> SrwError:
        return SrwError(f"{self.source}: refused to unpickle {what[:120]}; a CIFAR python-format file holds only "
                        "one uint8 numpy array, lists, dicts and strings")

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise self._refused(f"{module}.{name}")
        return self.allowed[module, name]


def unpickle_cifar(data: bytes, source: str) -> dict:
    """A python-format file's dict, its keys as ``str``."""
    try:
        content = CifarUnpickler(io.BytesIO(data), source).load()
    except SrwError:
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()
        raise SrwError(f"{source}: not a CIFAR python-format file ({type(error).__name__}: "
                       f"{detail[0] if detail else 'unreadable'})") from None  # fmt: skip
    if not isinstance(content, dict):
        raise SrwError(f"{source}: not a CIFAR python-format file (holds a {type(content).__name__}, not a dict)")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


@dataclass
class CifarSplit:
    """``images`` uint8 ``[N, 3, 32, 32]`` and ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class CifarData:
    train: CifarSplit
    test: CifarSplit
    class_names: list[str]
    source: str  # the folder or archive read


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise SrwError(f"{source}: labels outside 0..{num_classes - 1} (found {labels.min()}..{labels.max()})")


def _python_split(layout: CifarLayout, files: dict[str, bytes], names: tuple[str, ...], num_classes: int, where: str):
    images, labels = [], []
    for name in names:
        source = f"{where}/{name}"
        content = unpickle_cifar(files[name], source)
        data, label_list = content.get("data"), content.get(layout.label_field)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
            raise SrwError(f"{source}: 'data' is not a uint8 array of shape [N, {IMAGE_BYTES}]")
        if len(data) > PUBLISHED_IMAGES[name]:
            raise SrwError(f"{source}: {len(data)} images, more than the published file's {PUBLISHED_IMAGES[name]}")
        if not isinstance(label_list, list) or not all(type(label) is int for label in label_list):
            raise SrwError(f"{source}: {layout.label_field!r} is not a list of integers")  # not floats, strings
        label_array = np.asarray(label_list, dtype=np.int64)
        if label_array.shape != (len(data),):
            raise SrwError(f"{source}: {len(data)} images but {label_array.size} {layout.label_field!r}")
        _check_labels(label_array, num_classes, source)
        images.append(data)
        labels.append(label_array)
    return _split(images, labels)


def _binary_split(layout: CifarLayout, files: dict[str, bytes], names: tuple[str, ...], num_classes: int, where: str):
    record = layout.label_bytes + IMAGE_BYTES
    images, labels = [], []
    for name in names:
        source = f"{where}/{name}"
        raw = np.frombuffer(files[name], dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise SrwError(f"{source}: {raw.size} bytes is not a whole number of {record}-byte records (truncated?)")
        records = raw.reshape(-1, record)
        if len(records) > PUBLISHED_IMAGES[name]:
            raise SrwError(f"{source}: {len(records)} images, more than the published file's {PUBLISHED_IMAGES[name]}")
        label_array = records[:, layout.label_field].astype(np.int64)
        _check_labels(label_array, num_classes, source)
        images.append(records[:, layout.label_bytes :])
        labels.append(label_array)
    return _split(images, labels)


def _split(images: list[np.ndarray], labels: list[np.ndarray]) -> CifarSplit:
    pixels = np.concatenate(images).reshape(-1, 3, 32, 32)  # a fresh, writable array
    return CifarSplit(torch.from_numpy(pixels), torch.from_numpy(np.concatenate(labels)))


def _class_names(layout: CifarLayout, data: bytes, num_classes: int, where: str) -> list[str]:
    source = f"{where}/{layout.names_file}"
    if layout.kind == "python":
        names = unpickle_cifar(data, source).get(layout.names_field)
    else:
        try:
            names = [line.strip() for line in data.decode("ascii").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise SrwError(f"{source}: not a text file of label names") from None
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise SrwError(f"{source}: expected {num_classes} label names")
    return names


def max_file_bytes(name: str) -> int:
    """The largest a CIFAR file named ``name`` may be: its published images' pixels and labels, and framing."""
    if name not in PUBLISHED_IMAGES:
        return MAX_NAMES_BYTES
    return PUBLISHED_IMAGES[name] * (IMAGE_BYTES + 2) + MAX_FILE_OVERHEAD


def _read_folder(folder: Path, needed: tuple[str, ...]) -> dict[str, bytes]:
    from mobilesam_srw.atomic import read_regular

    files = {}
    for name in needed:
        path = folder / name
        if not path.is_file():
            raise SrwError(f"{folder}: missing {name}; is it a complete {folder.name} folder?")
        files[name] = read_regular(path, max_file_bytes(name))
    return files


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_archive(archive: Path, layout: CifarLayout, needed: tuple[str, ...]) -> dict[str, bytes]:
    expected = ARCHIVE_MD5[layout.archive]
    actual = file_md5(archive)
    if actual != expected:
        raise SrwError(f"{archive}: MD5 {actual} differs from the official archive's {expected} (damaged download?)")
    wanted = {f"{layout.folder}/{name}": name for name in needed}
    files = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and member.isfile():
                    files[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SrwError(f"{archive}: cannot read the archive ({error})") from None
    missing = [name for name in needed if name not in files]
    if missing:
        raise SrwError(f"{archive}: missing {layout.folder}/{missing[0]}")
    return files


def find_cifar(data_dir: str | Path, dataset: str) -> tuple[CifarLayout, Path]:
    """The layout and path (folder or archive) of ``dataset`` in ``data_dir``.

    ``data_dir`` is the folder holding one of the extracted folders or archives, or that folder
    or archive itself. Looked for in this order: python folder, python archive, binary folder,
    binary archive.
    """
    if dataset not in LAYOUTS:
        raise SrwError(f"unknown CIFAR data set {dataset!r}; expected one of {', '.join(LAYOUTS)}")
    root = Path(data_dir)
    if not root.exists():
        raise SrwError(f"data folder not found: {root}")
    for layout in LAYOUTS[dataset]:
        if root.name == layout.folder and root.is_dir():
            return layout, root
        if root.name == layout.archive and root.is_file():
            return layout, root
    for layout in LAYOUTS[dataset]:
        if (root / layout.folder).is_dir():
            return layout, root / layout.folder
        if (root / layout.archive).is_file():
            return layout, root / layout.archive
    expected = ", ".join(f"{lay.folder}/, {lay.archive}" for lay in LAYOUTS[dataset])
    raise SrwError(f"no {dataset} data in {root}: expected one of {expected}")


def read_cifar(data_dir: str | Path, dataset: str) -> CifarData:
    """Read the train and test splits of ``dataset`` (``"cifar100"`` or ``"cifar10"``).

    Args:
        data_dir: see :func:`find_cifar`.
        dataset: ``"cifar100"`` (fine labels) or ``"cifar10"``.

    Raises:
        SrwError: no data found, a wrong archive MD5, a missing, malformed or truncated file,
            or a pickle naming a global other than numpy's array reconstruction.
    """
    layout, path = find_cifar(data_dir, dataset)
    num_classes = NUM_CLASSES[dataset]
    needed = layout.train_files + layout.test_files + (layout.names_file,)
    files = _read_folder(path, needed) if path.is_dir() else _read_archive(path, layout, needed)
    split = _python_split if layout.kind == "python" else _binary_split
    where = str(path)
    return CifarData(
        train=split(layout, files, layout.train_files, num_classes, where),
        test=split(layout, files, layout.test_files, num_classes, where),
        class_names=_class_names(layout, files[layout.names_file], num_classes, where),
        source=where,
    )


def cifar_transform(train: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """mdistiller's CIFAR transforms on uint8 ``[3, 32, 32]`` tensors.

    Training: random 32 px crop of the image zero-padded by 4, horizontal flip (p 0.5); both: to
    float in [0, 1], normalise by ``mean`` / ``std``.
    """
    steps = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if train else []
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def cifar_datasets(data_dir: str | Path, dataset: str, train_transform: bool = True):
    """``(train, test, num_classes)`` data sets giving :func:`~mobilesam_srw.cls.data.items.make_item` dicts.

    Args:
        data_dir: see :func:`find_cifar`.
        dataset: ``"cifar100"`` or ``"cifar10"``.
        train_transform: augment the training set (False: the test transform for both).
    """
    data = read_cifar(data_dir, dataset)
    mean, std = (CIFAR100_MEAN, CIFAR100_STD) if dataset == "cifar100" else (CIFAR10_MEAN, CIFAR10_STD)
    datasets = []
    for split_name, split, augment in (("train", data.train, train_transform), ("test", data.test, False)):
        keys = [f"{dataset}/{split_name}/{index:05d}" for index in range(len(split.labels))]
        transform = cifar_transform(augment, mean, std)
        datasets.append(TensorImageDataset(split.images, split.labels, keys, transform, data.class_names))
    return datasets[0], datasets[1], NUM_CLASSES[dataset]
