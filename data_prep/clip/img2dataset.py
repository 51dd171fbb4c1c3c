"""The img2dataset source: image-text pairs in WebDataset tars, as CC3M is usually fetched.

img2dataset (``--output_format webdataset``) writes tars ``00000.tar``, ``00001.tar``, ... each
holding per sample ``<key>.jpg`` (or ``.png``/``.webp``), ``<key>.txt`` (the caption) and
``<key>.json`` (url, sizes, status, ...), beside ``.parquet`` and ``_stats.json`` files. The key is
the member name up to its first dot, as WebDataset reads it, and must be a safe key
(``shards.KEY_PATTERN``).

Like the other precompute sources (``data_prep.sources``), :func:`discover` returns tars as units
(a subset chooses whole tars) that are indexed by their headers only when chosen; a sample is then
read with one seek. A bad sample or tar never stops a run: it becomes a :class:`Skip` with a reason.
Images stay Pillow images in their own mode and orientation: open_clip's preprocessing resizes
before converting to RGB and applies no EXIF rotation, and the teacher must see what open_clip
shows it (``teacher.PixelTransform``).
"""

from __future__ import annotations

import glob
import io
import json
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from mobilesam_srw.data_prep.sources import (
    BadSample,
    Discovery,
    ImageLimits,
    Skip,
    SourceOptions,
    Unit,
)
from mobilesam_srw.errors import SrwError
from mobilesam_srw.shards import KEY_PATTERN, is_safe_key
from mobilesam_srw.tar_index import FileSpan, index_tar

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # preference order when a key has several
CAPTION_EXTENSION = "txt"
RECORD_EXTENSION = "json"
_SHOWN_KEY_CHARACTERS = 60
_SAMPLE_EXTENSIONS = (*IMAGE_EXTENSIONS, CAPTION_EXTENSION, RECORD_EXTENSION)


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a sample key (``shards.KEY_PATTERN``), or ``None`` when it can."""
    if is_safe_key(key):
        return None
    shown = key if len(key) <= _SHOWN_KEY_CHARACTERS else key[:_SHOWN_KEY_CHARACTERS] + "..."
    return f"unsafe key {shown!r} (a key matches {KEY_PATTERN.pattern})"


@dataclass
class ImageTextSample:
    """A decoded sample.

    Args:
        key: the sample key.
        source: the tar it came from (its file name).
        image: the decoded Pillow image, in its own mode (``RGB`` for img2dataset's JPEGs).
        caption: the caption, stripped.
        record: img2dataset's JSON record (``{}`` when the tar has none for this key).
    """

    key: str
    source: str
    image: Image.Image
    caption: str
    record: dict


def _read(span: FileSpan, what: str, limits: ImageLimits) -> bytes:
    if span.size > limits.max_file_bytes:
        raise BadSample(f"oversize {what}: {span.size} bytes > {limits.max_file_bytes}")
    try:
        return span.read()
    except (OSError, ValueError) as error:  # a member cut off by a truncated tar, a vanished file
        raise BadSample(f"unreadable {what}: {error}") from None


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Image bytes -> a fully decoded Pillow image; corrupt, truncated or oversize images raise :class:`BadSample`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: the limit is ours
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise BadSample(f"oversize image: {width}x{height} pixels > {limits.max_pixels}")
            image.load()  # decode now: a truncated file fails here, not in the teacher's batch
        except BadSample:
            raise
        except Exception as error:  # Pillow raises many types on malformed files (OSError, SyntaxError, ...)
            raise BadSample(f"corrupt image: {type(error).__name__}: {error}") from None
    if min(image.size) < 1:
        raise BadSample(f"corrupt image: size {image.size}")
    return image


@dataclass(frozen=True)
class ImageTextRef:
    """Where one sample's members are in a tar; small and picklable (it travels to DataLoader workers).

    Args:
        key: the sample key (a safe key).
        source: the tar's file name.
        image: the image member.
        caption: the ``.txt`` member.
        record: the ``.json`` member, ``None`` when absent (the record is optional).
    """

    key: str
    source: str
    image: FileSpan
    caption: FileSpan
    record: FileSpan | None

    def load(self, limits: ImageLimits = ImageLimits()) -> ImageTextSample:
        """Read and decode the sample.

        Raises:
            BadSample: a corrupt, truncated or oversize image; an empty or non-UTF-8 caption; a
                malformed JSON record; a member cut off by a truncated tar. The message is the reason.
        """
        try:
            caption = _read(self.caption, "caption", limits).decode("utf-8").strip()
        except UnicodeDecodeError as error:
            raise BadSample(f"caption is not UTF-8: {error}") from None
        if not caption:
            raise BadSample("empty caption")
        record: dict = {}
        if self.record is not None:
            try:
                record = json.loads(_read(self.record, "json", limits))
            except (ValueError, RecursionError) as error:
                raise BadSample(f"malformed json: {type(error).__name__}: {error}") from None
            if not isinstance(record, dict):
                raise BadSample("malformed json: not an object")
        image = decode_image(_read(self.image, "image", limits), limits)
        return ImageTextSample(self.key, self.source, image, caption, record)


def _has_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def discover_tars(paths: Sequence[str | Path]) -> list[Path]:
    """Tars named directly, in folders (their ``*.tar``, not recursive) or by quoted globs; sorted, unique.

    Raises:
        SrwError: a path that does not exist, a glob matching nothing, a folder without tars, a file
            named directly that is not a tar, two tars with one file name (the manifest names tars).
    """
    found: set[Path] = set()
    for given in paths:
        text = str(given)
        matches = [Path(match) for match in sorted(glob.glob(text))] if _has_glob(text) else [Path(text)]
        if not matches:
            raise SrwError(f"no input matches {text}")
        for path in matches:
            if path.is_dir():
                tars = [tar for tar in path.glob("*.tar") if tar.is_file()]
                if not tars and not _has_glob(text):
                    raise SrwError(f"no .tar files in folder {path}")
                found.update(tars)
            elif path.is_file() and path.suffix == ".tar":
                found.add(path)
            elif not path.exists():
                raise SrwError(f"no such file or folder: {path}")
            elif not _has_glob(text):  # a glob may match img2dataset's .parquet and _stats.json files too
                raise SrwError(f"not a tar or folder of tars: {path}")
    if not found:
        raise SrwError(f"no .tar files in {', '.join(map(str, paths))}")
    tars = sorted(found)
    names = [tar.name for tar in tars]
    if len(set(names)) != len(names):
        raise SrwError(
            "two input tars share a file name (two img2dataset outputs?); precompute each into its own folder"
        )
    return tars


def _split_member(name: str) -> tuple[str, str] | None:
    """``dir/key.ext.more`` -> ``("dir/key", "ext.more")`` as WebDataset splits names; ``None`` without a dot."""
    folder, _, base = name.rpartition("/")
    if "." not in base:
        return None
    key, _, extension = base.partition(".")
    return (f"{folder}/{key}" if folder else key), extension.lower()


def pair_members(members: dict[str, FileSpan], source: str) -> tuple[list[ImageTextRef], list[Skip]]:
    """Group a tar's members by key; a key without an image or caption, or an unsafe key, is a skip.

    Members of other extensions (img2dataset's extra columns, say) are ignored.
    """
    groups: dict[str, dict[str, FileSpan]] = {}
    skipped: list[Skip] = []
    for name, span in members.items():
        split = _split_member(name)
        if split is None:
            skipped.append(Skip(name[:200], source, "stray member (no extension)"))
            continue
        groups.setdefault(split[0], {})[split[1]] = span
    refs = []
    for key, fields in groups.items():
        image = next((fields[extension] for extension in IMAGE_EXTENSIONS if extension in fields), None)
        if image is None and CAPTION_EXTENSION not in fields and RECORD_EXTENSION not in fields:
            if any(extension.rpartition(".")[2] in _SAMPLE_EXTENSIONS for extension in fields):  # x.y.jpg
                skipped.append(Skip(key[:200], source, f"unsafe key: a dot in {key}.{next(iter(fields))}"[:200]))
            continue  # else no member a sample has: some other file, nothing to record
        problem = key_problem(key)
        if problem is None and image is None:
            problem = f"missing image (.{'/.'.join(IMAGE_EXTENSIONS)})"
        if problem is None and CAPTION_EXTENSION not in fields:
            problem = "missing caption (.txt)"
        if problem is not None:
            skipped.append(Skip(key[:200], source, problem))
            continue
        refs.append(ImageTextRef(key, source, image, fields[CAPTION_EXTENSION], fields.get(RECORD_EXTENSION)))
    return refs, skipped


def scan_tar(path: Path) -> tuple[list[ImageTextRef], list[Skip]]:
    """Index one tar by its headers; an unreadable or truncated tar keeps the samples read before the fault."""
    path = Path(path)
    members, error = index_tar(path)
    refs, skipped = pair_members(members, path.name)
    if error is not None:
        skipped.append(Skip("", path.name, f"unreadable tar after {len(members)} members: {error}"))
    return refs, skipped


def discover(paths: Sequence[str | Path], options: SourceOptions = SourceOptions()) -> Discovery:
    """The tars of ``paths`` as precompute units (one per tar, scanned only when chosen)."""
    units = [Unit(tar.name, tar.name, "tar", partial(scan_tar, tar)) for tar in discover_tars(paths)]
    return Discovery(units, [], "image-text pairs")


def iterate_samples(
    paths: Sequence[str | Path], limits: ImageLimits = ImageLimits()
) -> Iterator[ImageTextSample | Skip]:
    """Every sample of the tars in ``paths`` in order, or a :class:`Skip` saying why one (or a tar) is left out."""
    for tar in discover_tars(paths):
        refs, skipped = scan_tar(tar)
        yield from skipped
        for ref in refs:
            try:
                yield ref.load(limits)
            except BadSample as error:
                yield Skip(ref.key, ref.source, str(error))
