"""Zero-shot classification with the teacher's text tower (CLIP's protocol, as open_clip evaluates it).

Each class's weight is the normalised mean of the normalised text embeddings of its prompts
(``template.format(classname)`` for every template); logits are ``100 * normalise(image) @ W``.
ImageNet-1K's class names and the 80 OpenAI prompt templates come from open_clip's own
``open_clip.zero_shot_metadata``; any ImageFolder label set works with a class-names file.
Classifiers are cached on disk as ``.npy`` (``allow_pickle=False``), keyed by a hash of the teacher's
identity, the templates and the class names.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

from mobilesam_srw.atomic import atomic_file, write_failures, write_json
from mobilesam_srw.clip.teacher import ClipTeacher, TeacherIdentity
from mobilesam_srw.errors import SrwError

LOGIT_SCALE = 100.0  # CLIP's learned temperature, fixed as in open_clip's zero-shot evaluation
PLACEHOLDER = "{}"


def imagenet_classnames() -> list[str]:
    """open_clip's 1000 ImageNet-1K class names, in the sorted-synset (ImageFolder) order of ``n01440764 ...``."""
    return list(IMAGENET_CLASSNAMES)


def openai_imagenet_templates() -> list[str]:
    """open_clip's 80 OpenAI ImageNet prompts as format strings (``"a photo of a {}."``)."""
    return [template(PLACEHOLDER) for template in OPENAI_IMAGENET_TEMPLATES]


def _read_lines(path: Path, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise SrwError(f"{what} file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SrwError(f"cannot read {what} file {path}: {error}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise SrwError(f"{what} file {path} is empty")
    if "" in names:
        raise SrwError(f"{what} file {path} has a blank line {names.index('') + 1}; one entry per line, none empty")
    return names


def read_classnames(path: Path) -> list[str]:
    """Class names, one per line, in the order of the ImageFolder's (sorted) class folders."""
    return _read_lines(path, "class-names")


def read_templates(path: Path) -> list[str]:
    """Prompt templates, one per line, each with one ``{}`` where the class name goes."""
    templates = _read_lines(path, "templates")
    for number, template in enumerate(templates, start=1):
        if template.count(PLACEHOLDER) != 1:
            raise SrwError(f"template {number} of {path} needs exactly one '{{}}': {template!r}")
    return templates


def render_prompts(classname: str, templates: Sequence[str]) -> list[str]:
    """Every template with the class name in place of its ``{}``."""
    return [template.replace(PLACEHOLDER, classname) for template in templates]


@torch.no_grad()
def build_zero_shot_classifier(
    model: torch.nn.Module,
    tokenizer: Callable,
    classnames: Sequence[str],
    templates: Sequence[str],
    classes_per_batch: int = 10,
    progress: Callable | None = None,
) -> torch.Tensor:
    """Class weights ``[D, C]`` float32 on the CPU from the text tower.

    Args:
        model: an open_clip CLIP (``encode_text``).
        tokenizer: its open_clip tokenizer.
        classnames: ``C`` class names.
        templates: prompt format strings with one ``{}``.
        classes_per_batch: classes per text forward pass (``len(templates)`` prompts each).
        progress: wraps the batch iterator (e.g. ``tqdm``), optional.
    """
    if not classnames or not templates:
        raise ValueError("classnames and templates must be non-empty")
    device = next(model.parameters()).device
    batches = [classnames[start : start + classes_per_batch] for start in range(0, len(classnames), classes_per_batch)]
    weights = []
    for batch in progress(batches) if progress else batches:
        prompts = [prompt for name in batch for prompt in render_prompts(name, templates)]
        text = F.normalize(model.encode_text(tokenizer(prompts).to(device)).float(), dim=-1)
        per_class = text.reshape(len(batch), len(templates), -1).mean(dim=1)
        weights.append(F.normalize(per_class, dim=-1).cpu())
    return torch.cat(weights).T.contiguous()


def classifier_key(identity: TeacherIdentity, classnames: Sequence[str], templates: Sequence[str]) -> str:
    """sha256 of what decides the classifier: teacher name, weights, tag, QuickGELU, templates, class names."""
    material = {
        "teacher": identity.name,
        "checkpoint_sha256": identity.checkpoint_sha256,
        "pretrained_tag": identity.pretrained_tag,
        "quick_gelu": identity.quick_gelu,
        "open_clip_version": identity.open_clip_version,  # the tokenizer ships with open_clip
        "templates": list(templates),
        "classnames": list(classnames),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def cached_zero_shot_classifier(
    teacher: ClipTeacher,
    classnames: Sequence[str],
    templates: Sequence[str],
    cache_dir: Path | None,
    progress: Callable | None = None,
) -> torch.Tensor:
    """:func:`build_zero_shot_classifier` of the teacher, read from ``cache_dir`` when built before.

    The cache file is ``zeroshot-<key>.npy`` (``[D, C]`` float32, ``allow_pickle=False``) with a
    ``.json`` beside it naming the teacher and the label set. A teacher without a checkpoint
    (random, in memory) is never cached: nothing identifies its weights.
    """
    if cache_dir is None or teacher.identity.checkpoint_sha256 is None:
        return build_zero_shot_classifier(teacher.model, teacher.tokenizer, classnames, templates, progress=progress)
    key = classifier_key(teacher.identity, classnames, templates)
    path = Path(cache_dir) / f"zeroshot-{key[:32]}.npy"
    expected_shape = (teacher.identity.embed_dim, len(classnames))
    if path.is_file():
        try:
            weights = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise SrwError(f"cannot read cached classifier {path} (delete it to rebuild): {error}") from None
        if weights.shape != expected_shape or weights.dtype != np.float32:
            raise SrwError(f"cached classifier {path} is {weights.dtype} {weights.shape}, not float32 {expected_shape}")
        if not np.isfinite(weights).all():
            raise SrwError(f"cached classifier {path} holds NaN or inf (delete it to rebuild)")
        return torch.from_numpy(weights)
    weights = build_zero_shot_classifier(teacher.model, teacher.tokenizer, classnames, templates, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_failures(path), atomic_file(path) as stream:
        np.save(stream, weights.numpy(), allow_pickle=False)
    write_json(
        path.with_suffix(".json"),
        {"key": key, "teacher": teacher.identity.describe(), "classes": len(classnames), "templates": len(templates)},
    )
    return weights


def zero_shot_logits(
    image_features: torch.Tensor, classifier: torch.Tensor, scale: float = LOGIT_SCALE
) -> torch.Tensor:
    """``[B, D]`` image embeddings (any norm) and ``[D, C]`` class weights -> ``[B, C]`` logits."""
    features = F.normalize(image_features.float(), dim=-1)
    return scale * features @ classifier.to(features.device, torch.float32)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many of ``labels`` ``[B]`` are among the top-k of ``logits`` ``[B, C]``, for each k (capped at C)."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = ranked == labels.to(ranked.device)[:, None]
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}
