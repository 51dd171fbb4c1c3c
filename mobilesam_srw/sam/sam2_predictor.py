"""Masks from stored or students' SAM 2 features, through SAM 2's own prompt encoder and mask decoder.

:class:`Sam2FeaturePredictor` is the ``sam2`` package's ``SAM2ImagePredictor`` whose ``_features`` are
given rather than computed (``set_features``; ``set_image`` re-installs them, so
``SAM2AutomaticMaskGenerator`` runs on them too). Prompts go through the predictor's own
``_prep_prompts`` and ``_predict`` (``SAM2Transforms`` coordinates, the mask decoder with the
high-resolution features, ``postprocess_masks``), so masks from a teacher's stored features are
``SAM2ImagePredictor.predict``'s on the stored image. :class:`Sam2PromptModels` is
:class:`~mobilesam_srw.sam.prompt_models.PromptModels` for these predictors.

This module imports ``sam2``: import it only for SAM 2 teachers (the ``[sam2]`` extra).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.sam2_image_predictor import SAM2ImagePredictor
from torch import nn

from mobilesam_srw.sam.preprocessing import Preprocessing, student_input
from mobilesam_srw.sam.prompt_models import PromptModels
from mobilesam_srw.sam.teachers.sam2 import HIGH_RES_MAPS, scripting_quietly
from mobilesam_srw.sam.transforms import pad_image
from mobilesam_srw.shards import ShardSample


class Sam2FeaturePredictor(SAM2ImagePredictor):
    """``SAM2ImagePredictor`` on given features (see the module docstring).

    Args:
        model: a ``SAM2Base`` (its image encoder never runs here).
        predictor_options: ``SAM2ImagePredictor``'s (``mask_threshold``, ...).
    """

    def __init__(self, model: nn.Module, **predictor_options) -> None:
        with scripting_quietly():
            super().__init__(model, **predictor_options)
        self._installed: tuple[dict, tuple[int, int]] | None = None

    def set_features(self, image_embed: torch.Tensor, high_res: Sequence[torch.Tensor],
                     original_size: tuple[int, int]) -> None:
        """Install ``[256, 64, 64]`` (or ``[1, 256, 64, 64]``) and the two high-resolution maps of an image of
        ``original_size`` (h, w), as ``set_image`` would compute them."""

        def batched(values: torch.Tensor) -> torch.Tensor:
            return values.reshape(1, *values.shape[-3:]).to(self.device, torch.float32)

        features = {"image_embed": batched(image_embed), "high_res_feats": [batched(m) for m in high_res]}
        self._installed = (features, (int(original_size[0]), int(original_size[1])))
        self._install()

    def _install(self) -> None:
        if self._installed is None:
            raise RuntimeError("Sam2FeaturePredictor: call set_features first")
        self.reset_predictor()
        features, original_size = self._installed
        self._features = {"image_embed": features["image_embed"], "high_res_feats": list(features["high_res_feats"])}
        self._orig_hw = [original_size]
        self._is_image_set = True

    def set_image(self, image) -> None:
        """Re-install the given features (``SAM2AutomaticMaskGenerator`` calls this); the image must be the
        size they were installed for."""
        size = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
        if self._installed is not None and tuple(size) != self._installed[1]:
            raise RuntimeError(f"image of size {tuple(size)} does not match the features' {self._installed[1]}")
        self._install()

    # --- what the evaluation modes and figures read (as EmbeddingPredictor gives it) ------------------------
    @property
    def original_size(self) -> tuple[int, int]:
        return self._installed[1]

    @property
    def frame_size(self) -> int:
        return self.model.image_size

    @property
    def input_extent(self) -> tuple[int, int]:
        """The image covers the whole ``S x S`` input (resized, not padded)."""
        return (self.frame_size, self.frame_size)

    def input_points(self, points: np.ndarray) -> np.ndarray:
        """Original-image ``(x, y)`` points in the ``S x S`` input, as ``SAM2Transforms.transform_coords``."""
        coords = torch.as_tensor(np.asarray(points, dtype=np.float32))
        return self._transforms.transform_coords(coords, normalize=True, orig_hw=self.original_size).numpy()

    @torch.no_grad()
    def point_batches(self, points: np.ndarray, multimask_output: bool = True, batch_size: int = 64):
        """One positive click per point (original-image ``(x, y)``), in batches: masks ``[n, M, h, w]`` bool at
        the original size and predicted IoUs ``[n, M]``."""
        for start in range(0, len(points), batch_size):
            chunk = np.asarray(points[start : start + batch_size], dtype=np.float32)[:, None, :]
            _, coords, labels, _ = self._prep_prompts(chunk, np.ones(chunk.shape[:2], dtype=np.int64), None, None,
                                                      normalize_coords=True)
            masks, scores, _ = self._predict(coords, labels, None, None, multimask_output=multimask_output)
            yield masks, scores

    @torch.no_grad()
    def box_batches(self, boxes: np.ndarray, batch_size: int = 64):
        """One box prompt (original-image XYXY) each, single-mask output, in batches; as :meth:`point_batches`."""
        for start in range(0, len(boxes), batch_size):
            chunk = np.asarray(boxes[start : start + batch_size], dtype=np.float32)
            _, _, _, box = self._prep_prompts(None, None, chunk, None, normalize_coords=True)
            masks, scores, _ = self._predict(None, None, box, None, multimask_output=False)
            yield masks, scores

    def automatic_masks(self, points_per_side: int, **generator_options) -> list[dict]:
        """``SAM2AutomaticMaskGenerator`` on the installed features, records sorted by area, largest first."""
        with scripting_quietly():
            generator = SAM2AutomaticMaskGenerator(self.model, points_per_side=points_per_side, **generator_options)
        generator.predictor = self
        height, width = self.original_size
        records = generator.generate(np.zeros((height, width, 3), dtype=np.uint8))  # only its size is read
        return sorted(records, key=lambda record: -record["area"])


@torch.no_grad()
def student_features(student: nn.Module, sample: ShardSample, device: torch.device,
                     preprocessing: Preprocessing) -> tuple[torch.Tensor, ...]:
    """A SAM 2 student's ``(image_embed, high_res_0, high_res_1)`` of the sample's stored image, seen through
    the teacher's ``SAM2Transforms`` as in training."""
    size = torch.tensor([sample.image.shape[:2]], device=device)
    image = pad_image(sample.image, preprocessing.input_size)[None].to(device)
    return tuple(output.float() for output in student(student_input(preprocessing, image, size, student.img_size)))


class Sam2PromptModels(PromptModels):
    """:class:`~mobilesam_srw.sam.prompt_models.PromptModels` on a SAM 2 teacher's ``SAM2Base`` (its image
    encoder left out): the stored three maps for the teacher, each student's three maps for it."""

    predictor_class = Sam2FeaturePredictor

    def install_stored(self, sample: ShardSample) -> None:
        high_res = [torch.from_numpy(sample.maps[name]) for name, _ in HIGH_RES_MAPS]
        self.teacher.set_features(torch.from_numpy(sample.embedding), high_res, tuple(sample.meta["original_size"]))

    def student_outputs(self, student: nn.Module, sample: ShardSample,
                        device: torch.device) -> tuple[torch.Tensor, ...]:
        return student_features(student, sample, device, self.preprocessing)

    def install_outputs(self, predictor: Sam2FeaturePredictor, outputs: tuple[torch.Tensor, ...],
                        sample: ShardSample) -> None:
        embed, *high_res = outputs
        predictor.set_features(embed, high_res, tuple(sample.meta["original_size"]))
