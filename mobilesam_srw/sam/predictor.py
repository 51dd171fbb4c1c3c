"""Masks from a stored or student image embedding, through SAM's own prompt encoder and mask decoder.

:class:`EmbeddingPredictor` is segment-anything's ``SamPredictor`` whose image features are
given rather than computed: ``set_embedding`` installs them, and ``set_image`` (which
``SamAutomaticMaskGenerator`` calls) re-installs them, so every prompt path of
segment-anything (points, boxes, the automatic generator) runs on them unchanged.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from torch import nn

from mobilesam_srw.sam.preprocessing import (
    Preprocessing,
    SamPreprocessing,
    student_input,
)
from mobilesam_srw.sam.prompts import prompt_transform
from mobilesam_srw.sam.student import SamStudent
from mobilesam_srw.sam.transforms import pad_image
from mobilesam_srw.shards import ShardSample

MaskDecoderCall = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # MaskDecoder.forward's keywords and outputs


class StoredEncoder(nn.Module):
    """Stands in for an image encoder whose output was stored: it has a size, and never runs."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the teacher's image encoder never runs in evaluation: its embeddings are stored")


class EmbeddingPredictor(SamPredictor):
    """``SamPredictor`` on a given embedding (see the module docstring)."""

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam)
        self.transform = prompt_transform(sam)  # boxes as the teacher's inference maps them (LiteMedSAM: truncated)
        self._embedding: torch.Tensor | None = None
        self._sizes: tuple[tuple[int, int], tuple[int, int]] | None = None

    def set_embedding(self, embedding: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int]) -> None:
        """Install ``[256, H, W]`` (or ``[1, 256, H, W]``) features of an image of ``original_size`` (h, w)
        resized to ``input_size`` (h, w) by ``ResizeLongestSide``."""
        self._embedding = embedding.reshape(1, *embedding.shape[-3:]).to(self.device, torch.float32)
        self._sizes = (tuple(original_size), tuple(input_size))
        self._install()

    @property
    def embedding_image_size(self) -> tuple[int, int]:
        """Original ``(h, w)`` of the image whose embedding is installed."""
        if self._sizes is None:
            raise RuntimeError("EmbeddingPredictor: call set_embedding first")
        return self._sizes[0]

    @property
    def frame_size(self) -> int:
        """The teacher's square input size S (its embedding grid is S / patch size on a side)."""
        return self.model.image_encoder.img_size

    @property
    def input_extent(self) -> tuple[int, int]:
        """``(h, w)`` the image covers in the teacher's S x S input (the rest is padding)."""
        return self.input_size

    def input_points(self, points: np.ndarray) -> np.ndarray:
        """Original-image ``(x, y)`` points in the teacher's input frame."""
        return self.transform.apply_coords(points, self.original_size)

    def automatic_masks(self, points_per_side: int, **generator_options) -> list[dict]:
        """:func:`automatic_masks` on this predictor."""
        return automatic_masks(self, points_per_side, **generator_options)

    def _install(self) -> None:
        self.reset_image()
        self.features = self._embedding
        self.original_size, self.input_size = self._sizes
        self.is_image_set = True

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if self._embedding is None:
            raise RuntimeError("EmbeddingPredictor: call set_embedding before prompting")
        if tuple(image.shape[:2]) != self._sizes[0]:
            raise RuntimeError(f"image of size {image.shape[:2]} does not match the embedding's {self._sizes[0]}")
        self._install()

    @torch.no_grad()
    def decode(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
               boxes: torch.Tensor | None = None, multimask_output: bool = True,
               decoder: MaskDecoderCall | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The low-res mask logits ``[B, M, h, w]`` and predicted IoUs ``[B, M]`` of prompts in the input
        frame: ``SamPredictor.predict_torch``'s prompt encoder and mask decoder calls, before it upscales
        (its third output, the same numbers; a test pins it). ``decoder``: called in place of the model's
        ``mask_decoder``, with its keywords (e.g. eval's sparse decoder, the same numbers to float rounding)."""
        if not self.is_image_set:
            raise RuntimeError("EmbeddingPredictor: call set_embedding before prompting")
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse_embeddings, dense_embeddings = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
        return (decoder or self.model.mask_decoder)(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse_embeddings,
            dense_prompt_embeddings=dense_embeddings,
            multimask_output=multimask_output,
        )

    def _point_prompts(self, points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        coords = self.transform.apply_coords(points, self.original_size)
        coords = torch.as_tensor(coords, dtype=torch.float32, device=self.device)[:, None, :]
        return coords, torch.ones(coords.shape[:2], dtype=torch.int64, device=self.device)

    def _box_prompts(self, boxes: np.ndarray) -> torch.Tensor:
        transformed = self.transform.apply_boxes(boxes, self.original_size)
        return torch.as_tensor(transformed, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def point_logits(self, points: np.ndarray, multimask_output: bool = True, batch_size: int = 64,
                     decoder: MaskDecoderCall | None = None):
        """As :meth:`point_batches`, without upscaling: yields low-res logits ``[n, M, h, w]`` and IoUs ``[n, M]``
        (``decoder``: as :meth:`decode`)."""
        for start in range(0, len(points), batch_size):
            yield self.decode(*self._point_prompts(points[start : start + batch_size]),
                              multimask_output=multimask_output, decoder=decoder)

    @torch.no_grad()
    def box_logits(self, boxes: np.ndarray, batch_size: int = 64,
                   decoder: MaskDecoderCall | None = None):
        """As :meth:`box_batches`, without upscaling: yields low-res logits ``[n, 1, h, w]`` and IoUs ``[n, 1]``
        (``decoder``: as :meth:`decode`)."""
        for start in range(0, len(boxes), batch_size):
            yield self.decode(None, None, boxes=self._box_prompts(boxes[start : start + batch_size]),
                              multimask_output=False, decoder=decoder)

    @torch.no_grad()
    def point_batches(self, points: np.ndarray, multimask_output: bool = True, batch_size: int = 64):
        """One positive click per point (original-image ``(x, y)``), in batches.

        Yields masks ``[n, M, h, w]`` bool at the original size (thresholded at 0) and the
        predicted IoUs ``[n, M]`` per batch; M is 3 with ``multimask_output``, else 1.
        """
        for start in range(0, len(points), batch_size):
            coords, labels = self._point_prompts(points[start : start + batch_size])
            masks, scores, _ = self.predict_torch(coords, labels, multimask_output=multimask_output)
            yield masks, scores

    @torch.no_grad()
    def box_batches(self, boxes: np.ndarray, batch_size: int = 64):
        """One box prompt (original-image XYXY) each, single-mask output, in batches; as :meth:`point_batches`."""
        for start in range(0, len(boxes), batch_size):
            transformed = self._box_prompts(boxes[start : start + batch_size])
            masks, scores, _ = self.predict_torch(None, None, boxes=transformed, multimask_output=False)
            yield masks, scores


@torch.no_grad()
def student_embedding(student: SamStudent, sample: ShardSample, device: torch.device,
                      preprocessing: Preprocessing | None = None) -> torch.Tensor:
    """``[1, 256, H, W]`` student embedding of the sample's stored (resized) image.

    Args:
        student: in eval mode, on ``device``.
        sample: its image is in the teacher's frame (longest side = the teacher's input size).
        device: where to run.
        preprocessing: the teacher's (:func:`~mobilesam_srw.sam.preprocessing.student_input`); default
            SAM's at the student's input size, the student trained on SAM-family shards of its own size.
    """
    preprocessing = preprocessing or SamPreprocessing(student.img_size)
    size = torch.tensor([sample.image.shape[:2]], device=device)
    image = pad_image(sample.image, preprocessing.input_size)[None].to(device)
    return student(student_input(preprocessing, image, size, student.img_size)).float()


def generator_default(name: str) -> float:
    """A default of ``SamAutomaticMaskGenerator`` (e.g. ``pred_iou_thresh``): segment-anything's own value."""
    import inspect

    from segment_anything import SamAutomaticMaskGenerator

    return inspect.signature(SamAutomaticMaskGenerator.__init__).parameters[name].default


def automatic_masks(predictor: EmbeddingPredictor, points_per_side: int, **generator_options) -> list[dict]:
    """``SamAutomaticMaskGenerator`` ("everything" mode) on the predictor's installed embedding (a predictor of
    another family, SAM 2's, runs its own generator: its ``automatic_masks``).

    Returns its records (``segmentation`` bool masks at the original size, ``area``, ``bbox``,
    ``predicted_iou``, ...), sorted by area, largest first.
    """
    if not isinstance(predictor, EmbeddingPredictor):
        return predictor.automatic_masks(points_per_side, **generator_options)
    from segment_anything import SamAutomaticMaskGenerator

    generator = SamAutomaticMaskGenerator(predictor.model, points_per_side=points_per_side, **generator_options)
    generator.predictor = predictor
    height, width = predictor.embedding_image_size
    records = generator.generate(np.zeros((height, width, 3), dtype=np.uint8))  # only its size is read
    return sorted(records, key=lambda record: -record["area"])
