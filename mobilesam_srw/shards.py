"""The teacher-embedding shard format: fields, embedding encodings, manifest, reader.

A shard is a WebDataset tar. Each sample ``<key>`` has these members:

- ``<key>.png`` (default, lossless) or ``<key>.jpg`` (``--image-format jpeg``, the quality in the
  manifest's ``jpeg_quality``): the RGB image resized so its longest side is the teacher's input size
  by the teacher's own resize (not padded). Folders written before the image format was a choice
  hold ``.jpg`` (quality 90); they read the same way.
- ``<key>.emb.npy``: the teacher embedding ``[C, H, W]``: float16 (``fp16``), float32
  (``fp32``), or int8 (``int8``) with
- ``<key>.emb_scale.npy`` (``int8`` only): float32 ``[H, W]``, one scale per patch:
  ``embedding = int8 * scale[None]``, ``scale = max_c |x_c| / 127`` (symmetric, per patch).
- ``<key>.avesim.npy``: float32 ``[H, W]``, Eq. 4 over the H*W patches of the float32
  embedding (before any rounding), so any tau can be trained later.
- ``<key>.json``: ``original_size`` and ``input_size`` as ``[h, w]``, ``source`` (tar or
  folder), ``image`` (SA-1B's image record) and ``annotations`` (SA-1B's COCO-RLE masks).
- ``<key>.<name>.npy`` (teachers with further target maps, e.g. SAM 2's high-resolution features):
  each map ``[C, H, W]`` stored as the embedding is (``int8``: with ``<key>.<name>_scale.npy``); the
  manifest's ``target_maps`` names them with their shapes.

Arrays are ``.npy`` written with ``allow_pickle=False`` and read the same way; nothing in
a shard is ever unpickled. ``manifest.json`` at the top of the folder describes them all.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
RUN_FILE = "precompute.json"  # written first by a precompute; manifest.json is written last, when it is complete
SHARD_PATTERN = "shard-{index:06d}.tar"
EMBEDDING_DTYPES = ("fp16", "fp32", "int8")
JPEG_QUALITY = 90  # the default of --jpeg-quality, and the quality of every folder written before it
# Stored image formats, each also its field's name (``<key>.png``, ``<key>.jpg``): PNG is lossless; JPEG an
# opt-in for storage. ``jpeg`` is accepted for ``jpg`` on the command line (:func:`image_format_name`).
IMAGE_FORMATS = ("png", "jpg")
IMAGE_FORMAT_CHOICES = (*IMAGE_FORMATS, "jpeg")
PNG_COMPRESSION = 3  # OpenCV's zlib level: lossless whatever the level; 3 is a fast one
EMBEDDING_FIELD = "emb.npy"
SCALE_FIELD = "emb_scale.npy"
AVESIM_FIELD = "avesim.npy"
META_FIELD = "json"

# A sample key names tar members (``<key>.<field>``) and files derived from it: letters, digits, ``_``
# and ``-`` only (no dot, which WebDataset reads as the field separator; no slash), at most 128 characters.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def is_safe_key(key: object) -> bool:
    """Whether ``key`` is a valid sample key (:data:`KEY_PATTERN`)."""
    return isinstance(key, str) and KEY_PATTERN.fullmatch(key) is not None


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def quantize_int8(embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[C, H, W]`` float -> (int8 ``[C, H, W]``, float32 scale ``[H, W]``), symmetric per patch."""
    embedding = embedding.astype(np.float32, copy=False)
    scale = np.abs(embedding).max(axis=0) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    quantized = np.clip(np.rint(embedding / safe[None]), -127, 127).astype(np.int8)
    return quantized, scale.astype(np.float32)


def dequantize_int8(quantized: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return quantized.astype(np.float32) * scale[None]


def map_fields(name: str) -> tuple[str, str]:
    """The fields of a further target map ``name``: its array and its int8 scale."""
    return f"{name}.npy", f"{name}_scale.npy"


def encode_embedding(embedding: np.ndarray, dtype: str, fields: tuple[str, str] = (EMBEDDING_FIELD, SCALE_FIELD)
                     ) -> dict[str, bytes]:
    """Shard fields for a float32 ``[C, H, W]`` embedding (or another target map, ``fields`` of
    :func:`map_fields`) stored as ``dtype``."""
    field, scale_field = fields
    if dtype == "int8":
        quantized, scale = quantize_int8(embedding)
        return {field: npy_bytes(quantized), scale_field: npy_bytes(scale)}
    if dtype in ("fp16", "fp32"):
        return {field: npy_bytes(embedding.astype(np.float16 if dtype == "fp16" else np.float32))}
    raise ValueError(f"dtype: unknown embedding dtype {dtype!r}, expected one of {', '.join(EMBEDDING_DTYPES)}")


def decode_embedding(fields: dict[str, bytes], as_float32: bool = True,
                     names: tuple[str, str] = (EMBEDDING_FIELD, SCALE_FIELD)) -> np.ndarray:
    """The ``[C, H, W]`` embedding (or target map of fields ``names``) of a sample's fields: float32, or
    with ``as_float32=False`` fp16 storage stays float16 (loaders convert on the device; int8 is always
    dequantised)."""
    field, scale_field = names
    stored = load_npy(fields[field])
    what = field.removesuffix(".npy") if field != EMBEDDING_FIELD else "embedding"
    if stored.dtype.kind not in "fi" or stored.ndim not in (1, 3):
        raise ValueError(f"{what}: a {stored.ndim}-d {stored.dtype} array is not a stored embedding")
    if stored.dtype == np.int8:
        return dequantize_int8(stored, load_npy(fields[scale_field]))
    return stored.astype(np.float32, copy=False) if as_float32 else stored


def encode_sample(
    key: str, image: bytes, embedding: np.ndarray, avesim: np.ndarray, meta: dict, dtype: str,
    image_format: str = "jpg", maps: dict[str, np.ndarray] | None = None,
) -> dict[str, object]:
    """A WebDataset sample dict (all values bytes) for ``webdataset.TarWriter(..., encoder=False)``;
    ``image`` is :func:`encode_image` bytes of ``image_format`` (the field's name); ``maps`` are further
    ``[C, H, W]`` target maps by name, stored as the embedding is."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    fields = {}
    for name, array in (maps or {}).items():
        fields.update(encode_embedding(array, dtype, map_fields(name)))
    return {
        "__key__": key,
        image_format: image,
        **encode_embedding(embedding, dtype),
        **fields,
        AVESIM_FIELD: npy_bytes(avesim.astype(np.float32)),
        META_FIELD: json.dumps(meta).encode(),
    }


@dataclass
class ShardSample:
    """One decoded sample.

    Args:
        key: the SA-1B stem, e.g. ``sa_1``.
        image: ``[h, w, 3]`` uint8 RGB, longest side = the encoder input size.
        embedding: ``[C, H, W]`` teacher embedding (float32, or float16 when so decoded).
        avesim: ``[H, W]`` float32 average similarity of each patch (Eq. 4): stored, or computed from
            the embedding when the shard has none.
        meta: the sample's JSON record.
        maps: further target maps by name (SAM 2's high-resolution features), when asked for.
    """

    key: str
    image: np.ndarray
    embedding: np.ndarray
    avesim: np.ndarray
    meta: dict
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def decode_image(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes -> ``[h, w, 3]`` uint8 RGB."""
    import cv2  # imported here: only readers of images need OpenCV

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("image: not a decodable PNG or JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_format_name(value: str) -> str:
    """A stored format's canonical name (its field's name): ``jpeg`` -> ``jpg``; others as they are."""
    return "jpg" if value == "jpeg" else value


def encode_image(rgb: np.ndarray, image_format: str = "jpg", jpeg_quality: int = JPEG_QUALITY) -> bytes:
    """``[h, w, 3]`` uint8 RGB -> PNG (lossless) or JPEG (``jpeg_quality``) bytes, for every task's shards."""
    import cv2

    image_format = image_format_name(image_format)
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    options = ([cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION] if image_format == "png"
               else [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    ok, data = cv2.imencode(f".{image_format}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), options)
    if not ok:
        raise ValueError(f"image: {image_format.upper()} encoding failed")
    return data.tobytes()


def image_field(fields: Iterable[str]) -> str | None:
    """The image field among a sample's field names (``png`` or ``jpg``), if any."""
    return next((name for name in IMAGE_FORMATS if name in fields), None)


def _is_size(value: object) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def decode_meta(data: bytes) -> dict:
    """A sample's JSON record, checked for what every reader relies on: ``original_size`` and
    ``input_size`` as ``[h, w]`` positive integers."""
    meta = json.loads(data)
    if not isinstance(meta, dict):
        raise ValueError("json: not an object")
    for name in ("original_size", "input_size"):
        if not _is_size(meta.get(name)):
            raise ValueError(f"json: {name} is not [h, w] of positive integers")
    return meta


def patch_avesim(embedding: np.ndarray) -> np.ndarray:
    """``[H, W]`` Eq. 4 over the patches of a ``[C, H, W]`` embedding (for shards stored without it)."""
    import torch

    from mobilesam_srw.srw import average_similarity

    channels, height, width = embedding.shape
    features = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32)).view(channels, -1).T
    return average_similarity(features).view(height, width).numpy()


def decode_sample(raw: dict, with_image: bool = True, as_float32: bool = True, maps: tuple[str, ...] = ()
                  ) -> ShardSample:
    """Decode a raw WebDataset sample (field -> bytes); unknown fields are ignored, never unpickled.

    What later steps rely on is checked here (a :class:`ValueError` naming the field otherwise):
    a safe key, a ``[C, H, W]`` embedding, an ``[H, W]`` avesim (computed from the embedding when
    the shard has none), sizes in the JSON record, a stored image of the recorded input size, and
    each further target map named in ``maps``, ``[C, H, W]``.
    """
    if not is_safe_key(raw["__key__"]):
        raise ValueError(f"key: {raw['__key__'][:80]!r} is not a safe sample key ({KEY_PATTERN.pattern})")
    meta = decode_meta(raw[META_FIELD])
    embedding = decode_embedding(raw, as_float32)
    if embedding.ndim != 3:
        raise ValueError(f"embedding: shape {list(embedding.shape)} is not [C, H, W]")
    if AVESIM_FIELD in raw:
        avesim = load_npy(raw[AVESIM_FIELD])
        if avesim.shape != embedding.shape[1:] or avesim.dtype.kind != "f":
            raise ValueError(f"avesim: a {avesim.dtype} array of shape {list(avesim.shape)}, expected float "
                             f"{list(embedding.shape[1:])}")
    else:
        avesim = patch_avesim(embedding)
    field = image_field(raw)
    if with_image and field is None:
        raise ValueError(f"image: no {' or '.join(IMAGE_FORMATS)} field")
    image = np.empty((0, 0, 3), np.uint8)
    if with_image:
        try:
            image = decode_image(raw[field])
        except ValueError:
            raise ValueError(f"image: not a decodable {'PNG' if field == 'png' else 'JPEG'}") from None
    if with_image and list(image.shape[:2]) != meta["input_size"]:
        raise ValueError(f"image: {image.shape[1]}x{image.shape[0]} px, but the record's input_size is "
                         f"{meta['input_size'][1]}x{meta['input_size'][0]}")
    decoded = {}
    for name in maps:
        if map_fields(name)[0] not in raw:
            raise ValueError(f"{name}: the sample has no such target map")
        decoded[name] = decode_embedding(raw, as_float32, map_fields(name))
        if decoded[name].ndim != 3:
            raise ValueError(f"{name}: shape {list(decoded[name].shape)} is not [C, H, W]")
    return ShardSample(key=raw["__key__"], image=image, embedding=embedding,
                       avesim=avesim.astype(np.float32, copy=False), meta=meta, maps=decoded)


def shard_paths(patterns: Iterable[str | Path]) -> list[str]:
    """Expand globs, folders (their ``*.tar``) and files into a sorted list of shard paths."""
    import glob

    found: set[str] = set()
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found.update(str(p) for p in path.glob("*.tar"))
        else:
            found.update(glob.glob(str(pattern)))
    return sorted(found)


def iterate_shards(paths: Iterable[str], with_image: bool = True, maps: tuple[str, ...] = ()):
    """Decoded :class:`ShardSample` of the shards in order (with the target ``maps`` named), read with
    WebDataset, one process.

    A sample or shard that cannot be read is one :class:`~mobilesam_srw.errors.SrwError` line naming it.
    """
    import webdataset as wds

    from mobilesam_srw.errors import SrwError

    paths = list(paths)
    pipeline = wds.DataPipeline(wds.SimpleShardList(paths), wds.tarfile_to_samples())
    try:
        for raw in pipeline:
            try:
                yield decode_sample(raw, with_image=with_image, maps=maps)
            except (ValueError, KeyError, TypeError, RecursionError) as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise SrwError(f"shard {raw.get('__url__', '?')}: sample {str(raw.get('__key__'))[:80]!r}: "
                               f"{reason}") from None
    except (OSError, EOFError, ValueError) as error:  # webdataset's tar reading
        raise SrwError(f"cannot read shards {', '.join(map(str, paths))[:300]}: "
                       f"{(str(error).strip().splitlines() or [type(error).__name__])[0]}") from None


def read_manifest(folder: Path) -> dict | None:
    """The folder's ``manifest.json`` (None when it has none); a malformed one is one line naming it."""
    from mobilesam_srw.atomic import read_json
    from mobilesam_srw.errors import SrwError

    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)  # a regular file of bounded size
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise SrwError(f"{path} is not a readable manifest: {str(error).splitlines()[0][:200]}") from None
    if not isinstance(manifest, dict):
        raise SrwError(f"{path} is not a manifest (a JSON object)")
    listed = manifest.get("shards", [])
    if not (isinstance(listed, list) and all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) and Path(entry["name"]).name == entry["name"]
            and isinstance(entry.get("samples"), int) and not isinstance(entry["samples"], bool)
            for entry in listed)):
        raise SrwError(f"{path}: its shards are not a list of {{name, samples}} entries")
    return manifest


# --- shard folders: finding shards, indexing members, their embedding shape ---------------------

REQUIRED_FIELDS = (EMBEDDING_FIELD, META_FIELD)  # and one image field (IMAGE_FORMATS)


def resolve_shards(patterns: Iterable[str], what: str = "--shards", partial: bool = False) -> list[str]:
    """:func:`shard_paths`, or a one-line error naming the option when nothing matches.

    Shards of a precompute that is still writing their folder (its lock held) or that has not finished
    (a run record, no manifest yet) are refused unless ``partial``: they are part of the data.
    """
    from mobilesam_srw.errors import SrwError

    paths = shard_paths(patterns)
    if not paths:
        raise SrwError(f"{what}: no shards match {' '.join(map(str, patterns))}")
    if not partial:
        _refuse_unfinished(paths, what)
    for pattern in patterns:
        if missing := _listed_but_missing(Path(pattern)):
            raise SrwError(f"{what}: {missing[0].parent / MANIFEST_NAME} lists {len(missing)} shard(s) that are "
                           f"missing, e.g. {missing[0].name}; restore them, or rerun precompute into the folder")
    return paths


def _refuse_unfinished(paths: list[str], what: str) -> None:
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.lock import is_locked

    for folder in sorted({Path(path).parent for path in paths}):
        if holder := is_locked(folder):
            raise SrwError(f"{what}: {folder} is being written by a precompute ({holder}); wait for it to finish, "
                           "or pass --partial-shards to use the shards written so far")
        if (folder / RUN_FILE).is_file() and not (folder / MANIFEST_NAME).is_file():
            raise SrwError(f"{what}: {folder} holds an unfinished precompute (no {MANIFEST_NAME} yet; killed?): "
                           "rerun it to finish, or pass --partial-shards to use the shards written so far")


def _listed_but_missing(pattern: Path) -> list[Path]:
    """Shards that the manifest beside ``pattern`` (a folder, or a glob or file in one) lists, that
    ``pattern`` would match, and that are not there."""
    import fnmatch

    folder = pattern if pattern.is_dir() else pattern.parent
    manifest = read_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        return []
    listed = [folder / entry["name"] for entry in manifest.get("shards", [])]
    return [path for path in listed if not path.is_file()
            and (pattern.is_dir() or fnmatch.fnmatchcase(str(path), str(pattern)))]


def index_shards(paths: Iterable[str]) -> list[dict]:
    """One entry per sample (in shard and member order): ``__key__`` and field -> :class:`FileSpan` of its bytes.

    Reads tar headers only (one seek per member), for random access in training.
    """
    from mobilesam_srw.errors import SrwError
    from mobilesam_srw.tar_index import index_tar

    samples: list[dict] = []
    for path in paths:
        members, error = index_tar(Path(path))
        if error is not None:
            raise SrwError(f"cannot read shard {path}: {error}")
        by_key: dict[str, dict] = {}
        for name, span in members.items():
            key, _, field = name.partition(".")
            by_key.setdefault(key, {})[field] = span
        for key, fields in by_key.items():
            if not is_safe_key(key):
                raise SrwError(f"shard {path}: {key[:80]!r} is not a safe sample key ({KEY_PATTERN.pattern})")
            missing = [f for f in REQUIRED_FIELDS if f not in fields]
            if image_field(fields) is None:
                missing.insert(0, "/".join(IMAGE_FORMATS))
            if missing:
                raise SrwError(f"shard {path}: sample {key} has no {', '.join(missing)} (not a precompute shard?)")
            samples.append({"__key__": key, **fields})
    return samples


def shards_identity(paths: list[str], option_name: str = "--shards") -> dict[str, str]:
    """``{"path", "fingerprint"}`` of a set of shards for ``--resume``: the fingerprint hashes each shard's
    file name and size and each manifest's plan fingerprint and teacher checkpoint (cheap: no shard is read;
    the same shards moved elsewhere keep it)."""
    import hashlib
    import os

    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: (Path(p).name, p)):
        digest.update(f"{Path(path).name}\t{os.path.getsize(path)}\n".encode())
    for manifest in _manifests(paths):
        teacher = manifest.get("teacher") if isinstance(manifest.get("teacher"), dict) else {}
        digest.update(f"{manifest.get('plan_fingerprint')}\t{teacher.get('checkpoint_sha256')}\n".encode())
    folders = sorted({str(Path(p).parent) for p in paths})
    return {"path": folders[0] if len(folders) == 1 else f"{folders[0]} (+{len(folders) - 1} folders)",
            "fingerprint": digest.hexdigest()}


def _manifests(paths: list[str]) -> list[dict]:
    return [m for folder in sorted({str(Path(p).parent) for p in paths}) if (m := read_manifest(Path(folder)))]


def embedding_shape(paths: list[str]) -> tuple[int, ...]:
    """The ``[C, H, W]`` embedding shape of the shards: from their ``manifest.json``, else their first sample."""
    from mobilesam_srw.errors import SrwError

    shapes = {tuple(m["embedding_shape"]) for m in _manifests(paths) if "embedding_shape" in m}
    if len(shapes) > 1:
        raise SrwError(f"the shards hold embeddings of several shapes: {sorted(shapes)}")
    if shapes:
        return shapes.pop()
    for sample in iterate_shards(paths[:1], with_image=False):
        return tuple(sample.embedding.shape)
    raise SrwError(f"{paths[0]} holds no samples")


def read_indexed(spans: dict, with_image: bool = True, as_float32: bool = True, maps: tuple[str, ...] = ()
                 ) -> ShardSample:
    """Decode one sample of :func:`index_shards` (reads only its own members).

    Anything wrong with it (a truncated member, a bad JPEG, JSON or array, an unsafe key) is one
    :class:`~mobilesam_srw.errors.SrwError` line naming the shard and the sample.
    """
    from mobilesam_srw.errors import SrwError

    key = spans["__key__"]
    where = next((span.path for name, span in spans.items() if name != "__key__"), "?")
    try:
        raw = {"__key__": key}
        raw.update({field: span.read() for field, span in spans.items() if field != "__key__"})
        return decode_sample(raw, with_image=with_image, as_float32=as_float32, maps=maps)
    except (ValueError, KeyError, TypeError, OSError, RecursionError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SrwError(f"shard {where}: sample {key[:80]!r}: {reason}") from None
