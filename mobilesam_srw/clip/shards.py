"""The CLIP shard format: the pixels the teacher saw and its image embedding, per sample.

A shard is a WebDataset tar written by ``srw-clip precompute``. Each sample ``<key>`` has:

- ``<key>.png`` (default, lossless) or ``<key>.jpg`` (``--image-format jpeg``, quality
  ``--jpeg-quality``, default ``shards.JPEG_QUALITY``): the ``[S, S, 3]`` uint8 RGB pixels of open_clip's preprocessing before
  ``ToTensor``/``Normalize`` (``teacher.PixelTransform``). The teacher embeds the *decoded* stored
  image, so the stored embedding is exactly the teacher's output on what training reads (for PNG
  that is also the teacher's output on the original photo through open_clip's own preprocess).
- ``<key>.emb.npy``: the teacher's ``encode_image`` output ``[D]``, float16 (``fp16``, default) or
  float32 (``fp32``), computed in float32 before rounding.
- ``<key>.txt``: the caption (UTF-8), kept for text-side work; training does not read it.
- ``<key>.json``: ``key``, ``source`` (the img2dataset tar), ``original_size`` ``[h, w]``,
  ``record`` (img2dataset's JSON record: url, status, ...).

The common helpers (``.npy`` without pickle, embedding encodings, the PNG/JPEG codec, shard finding, the
manifest) are :mod:`mobilesam_srw.shards`'; this module only names CLIP's fields. Unlike SAM's shards
there is no avesim field: SRW groups for CLIP are the samples of a batch, so Eq. 4 runs in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from mobilesam_srw import shards
from mobilesam_srw.errors import SrwError
from mobilesam_srw.tar_index import FileSpan, index_tar

FORMAT = "mobilesam-srw/clip-shards"
FORMAT_VERSION = 1
IMAGE_FORMATS = shards.IMAGE_FORMATS  # the image field is named by its format (shared with SAM's shards)
EMBEDDING_DTYPES = ("fp16", "fp32")  # a [D] vector is ~1 KiB in fp16: no int8 variant
EMBEDDING_FIELD = shards.EMBEDDING_FIELD
CAPTION_FIELD = "txt"
META_FIELD = shards.META_FIELD


def encode_pixels(pixels: np.ndarray, image_format: str, jpeg_quality: int = shards.JPEG_QUALITY) -> bytes:
    """``[S, S, 3]`` uint8 RGB -> PNG (lossless) or JPEG bytes (:func:`mobilesam_srw.shards.encode_image`)."""
    return shards.encode_image(pixels, image_format, jpeg_quality)


def stored_pixels(pixels: np.ndarray, image_format: str, jpeg_quality: int = shards.JPEG_QUALITY
                  ) -> tuple[bytes, np.ndarray]:
    """The bytes a shard stores for ``pixels`` and what a reader decodes from them (what the teacher embeds)."""
    data = encode_pixels(pixels, image_format, jpeg_quality)
    return data, shards.decode_image(data)


def encode_sample(key: str, image: bytes, image_format: str, embedding: np.ndarray, caption: str, meta: dict,
                  dtype: str) -> dict[str, object]:
    """A WebDataset sample dict (values are bytes) for ``webdataset.TarWriter(..., encoder=False)``.

    Args:
        key: the sample key (``shards.KEY_PATTERN``).
        image: the encoded image of :func:`stored_pixels`.
        image_format: ``png`` or ``jpg``, the image field's name.
        embedding: the teacher's float32 ``[D]`` embedding of the decoded image.
        caption: the caption.
        meta: the JSON record.
        dtype: ``fp16`` or ``fp32``.
    """
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(EMBEDDING_DTYPES)}, got {dtype!r}")
    if embedding.ndim != 1:
        raise ValueError(f"embedding: expected [D], got shape {list(embedding.shape)}")
    return {
        "__key__": key,
        image_format: image,
        **shards.encode_embedding(embedding, dtype),
        CAPTION_FIELD: caption.encode("utf-8"),
        META_FIELD: json.dumps(meta).encode(),
    }


@dataclass
class ClipSample:
    """One decoded sample.

    Args:
        key: the sample key.
        pixels: ``[S, S, 3]`` uint8 RGB, the teacher's input before normalisation.
        embedding: ``[D]`` teacher image embedding (float32, or float16 when so decoded).
        caption: the caption.
        meta: the JSON record.
    """

    key: str
    pixels: np.ndarray
    embedding: np.ndarray
    caption: str
    meta: dict


image_field = shards.image_field


def decode_embedding(raw: dict, as_float32: bool = True, embed_dim: int | None = None) -> np.ndarray:
    """The ``[D]`` embedding of a sample's fields: fp16 or fp32 as stored (``EMBEDDING_DTYPES``), finite,
    ``embed_dim`` long when given; anything else is a :class:`ValueError` naming the field."""
    stored = shards.load_npy(raw[EMBEDDING_FIELD])
    if stored.dtype not in (np.float16, np.float32) or stored.ndim != 1 or (
            embed_dim is not None and stored.shape[0] != embed_dim):
        raise ValueError(f"embedding: a {stored.dtype} array of shape {list(stored.shape)} is not a stored "
                         f"[{embed_dim or 'D'}] fp16/fp32 embedding")
    if not np.isfinite(stored).all():
        raise ValueError(f"embedding: {int((~np.isfinite(stored)).sum())} of its {stored.size} values are NaN or inf")
    return stored.astype(np.float32, copy=False) if as_float32 else stored


def decode_sample(raw: dict, with_image: bool = True, as_float32: bool = True, with_embedding: bool = True,
                  image_size: tuple[int, int] | None = None, embed_dim: int | None = None) -> ClipSample:
    """Decode a raw sample (field -> bytes); unknown fields are ignored, nothing is unpickled.

    What later steps rely on is checked (a :class:`ValueError` naming the field otherwise): a safe key,
    a decodable image of ``image_size`` ``(H, W)``, a finite ``[embed_dim]`` fp16/fp32 embedding (when
    given), a UTF-8 caption and a JSON object.

    Args:
        raw: the sample's fields.
        with_image: decode the pixels (else an empty array).
        as_float32: fp16 embeddings become float32 (else they stay float16).
        with_embedding: decode the embedding (else an empty array).
        image_size: the teacher's input ``(H, W)`` the pixels must have (the manifest's), if known.
        embed_dim: the embedding size ``D`` (the manifest's), if known.
    """
    if not shards.is_safe_key(raw["__key__"]):
        raise ValueError(f"key: {raw['__key__'][:80]!r} is not a safe sample key ({shards.KEY_PATTERN.pattern})")
    field = image_field(raw)
    if with_image and field is None:
        raise ValueError(f"sample {raw.get('__key__')}: no image field ({', '.join(IMAGE_FORMATS)})")
    pixels = np.empty((0, 0, 3), np.uint8)
    if with_image:
        try:
            pixels = shards.decode_image(raw[field])
        except ValueError:
            raise ValueError(f"image: not a decodable {field.upper()}") from None
        if image_size is not None and pixels.shape[:2] != tuple(image_size):
            raise ValueError(f"image: {pixels.shape[1]}x{pixels.shape[0]} px, not the teacher's "
                             f"{image_size[1]}x{image_size[0]}")
    meta = json.loads(raw[META_FIELD])
    if not isinstance(meta, dict):
        raise ValueError(f"{META_FIELD}: a {type(meta).__name__}, not an object")
    return ClipSample(
        key=raw["__key__"],
        pixels=pixels,
        embedding=decode_embedding(raw, as_float32, embed_dim) if with_embedding else np.empty(0, np.float32),
        caption=raw[CAPTION_FIELD].decode("utf-8") if CAPTION_FIELD in raw else "",
        meta=meta,
    )


def index_clip_shards(paths: Iterable[str], counts: dict[str, int] | None = None) -> list[dict]:
    """One entry per sample, in shard and member order: ``__key__`` and field -> :class:`FileSpan`.

    Reads tar headers only, for random access in training (``shards.index_shards`` for CLIP's fields).
    With ``counts`` (shard path -> samples, :func:`listed_counts`), a shard holding another number of
    samples than its manifest lists (cut at a member boundary, or replaced) is one line.
    """
    samples: list[dict] = []
    for path in paths:
        members, error = index_tar(Path(path))
        if error is not None:
            raise SrwError(f"cannot read shard {path}: {error}")
        by_key: dict[str, dict[str, FileSpan]] = {}
        for name, span in members.items():
            key, _, field = name.partition(".")
            by_key.setdefault(key, {})[field] = span
        for key, fields in by_key.items():
            if not shards.is_safe_key(key):
                raise SrwError(f"shard {path}: {key[:80]!r} is not a safe sample key ({shards.KEY_PATTERN.pattern})")
            missing = [name for name in (EMBEDDING_FIELD, META_FIELD) if name not in fields]
            if image_field(fields) is None:
                missing.insert(0, "/".join(IMAGE_FORMATS))
            if missing:
                raise SrwError(f"shard {path}: sample {key} has no {', '.join(missing)} (not a srw-clip shard?)")
            samples.append({"__key__": key, **fields})
        if counts is not None and counts.get(str(path)) != len(by_key):
            raise SrwError(f"shard {path} holds {len(by_key)} samples, its {shards.MANIFEST_NAME} lists "
                           f"{counts.get(str(path))} (a truncated or replaced shard?)")
    return samples


def read_indexed(spans: dict, with_image: bool = True, as_float32: bool = True, with_embedding: bool = True,
                 image_size: tuple[int, int] | None = None, embed_dim: int | None = None) -> ClipSample:
    """Decode one sample of :func:`index_clip_shards` (checked as :func:`decode_sample` does), reading
    only the members it needs.

    Anything wrong with it (a truncated member, a bad image, JSON or array, a NaN embedding, an unsafe
    key) is one :class:`SrwError` line naming the shard and the sample.
    """
    key = spans["__key__"]
    where = next((span.path for name, span in spans.items() if name != "__key__"), "?")
    wanted = {META_FIELD, CAPTION_FIELD} | ({image_field(spans)} if with_image else set()) | (
        {EMBEDDING_FIELD} if with_embedding else set())
    try:
        raw = {"__key__": key}
        raw.update({field: span.read() for field, span in spans.items() if field in wanted})
        return decode_sample(raw, with_image=with_image, as_float32=as_float32, with_embedding=with_embedding,
                             image_size=image_size, embed_dim=embed_dim)
    except (ValueError, KeyError, TypeError, OSError, RecursionError, UnicodeDecodeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SrwError(f"shard {where}: sample {key[:80]!r}: {reason}") from None


def read_clip_manifests(paths: list[str]) -> list[dict]:
    """The ``manifest.json`` of every folder holding ``paths``, checked: a srw-clip manifest of this
    format version with a well-formed teacher record, listing every one of ``paths`` (shards it lists
    that are gone are refused by :func:`mobilesam_srw.shards.resolve_shards`). Anything else is one line
    naming the file."""
    from mobilesam_srw.clip.teacher_record import check_identity_record

    manifests = []
    for folder in sorted({str(Path(path).parent) for path in paths}):
        manifest = shards.read_manifest(Path(folder))
        where = Path(folder) / shards.MANIFEST_NAME
        if manifest is None:
            raise SrwError(f"{folder} has no {shards.MANIFEST_NAME}; point --shards at srw-clip precompute output")
        if manifest.get("format") != FORMAT:
            raise SrwError(f"{folder} holds {manifest.get('format', 'srw-sam')} shards, not srw-clip shards")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise SrwError(f"{folder} holds srw-clip shards of format version {manifest.get('format_version')}; "
                           f"this release reads {FORMAT_VERSION}")
        check_identity_record(manifest.get("teacher"), str(where))
        listed = {entry["name"] for entry in manifest.get("shards", [])}  # its form is read_manifest's check
        if unlisted := [path for path in paths if Path(path).parent == Path(folder) and Path(path).name not in listed]:
            raise SrwError(f"{unlisted[0]} is not listed in {where} (not written by its precompute)")
        manifests.append(manifest)
    return manifests


def listed_counts(paths: list[str]) -> dict[str, int]:
    """Shard path -> the samples its (checked) manifest lists, for :func:`index_clip_shards`."""
    counts = {}
    for manifest, folder in zip(read_clip_manifests(paths), sorted({str(Path(path).parent) for path in paths})):
        listed = {entry["name"]: entry["samples"] for entry in manifest.get("shards", [])}
        counts.update({path: listed[Path(path).name] for path in paths if str(Path(path).parent) == folder})
    return counts


def shard_teacher(paths: list[str]) -> dict:
    """The teacher identity (``TeacherIdentity.as_dict()``) of the shards; several teachers are refused."""
    teachers = {json.dumps(m["teacher"], sort_keys=True): m["teacher"] for m in read_clip_manifests(paths)}
    if len(teachers) != 1:
        names = sorted(f"{t['name']} ({(t.get('checkpoint_sha256') or 'random')[:12]})" for t in teachers.values())
        raise SrwError(f"the shards were written by several teachers: {', '.join(names)}")
    return next(iter(teachers.values()))
