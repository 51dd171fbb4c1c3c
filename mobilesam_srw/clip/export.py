"""Export a distilled student as an ordinary open_clip model: student image tower, teacher text tower.

The export is a folder in open_clip's ``local-dir:`` format, so plain open_clip loads it::

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:/path/to/export")
    tokenizer = open_clip.get_tokenizer("local-dir:/path/to/export")

- ``open_clip_config.json``: ``model_cfg`` is the teacher's config with ``vision_cfg`` = the timm
  student (``timm_model_name``, avg pool, linear projection); ``preprocess_cfg`` is the teacher's
  (size, mean/std, resize mode); ``mobilesam_srw`` records the teacher identity and student name.
- ``open_clip_model.safetensors``: the CLIP state dict; ``visual.trunk.*`` and ``visual.head.proj.*``
  are the student, the rest is the teacher's text tower and ``logit_scale``.

``model.encode_image`` is the student, ``model.encode_text`` the teacher's, so zero-shot classification
works as with the teacher. :func:`load_distilled_clip` does the same load after checking the folder.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save as safetensors_bytes

from mobilesam_srw.atomic import atomic_path, read_json, write_failures
from mobilesam_srw.clip.student import clip_vision_cfg
from mobilesam_srw.clip.teacher import ClipTeacher
from mobilesam_srw.errors import SrwError

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
RECORD_KEY = "mobilesam_srw"
EXPORT_FORMAT = "mobilesam-srw/distilled-clip"
EXPORT_VERSION = 1


def distilled_clip_config(teacher: ClipTeacher, student_name: str, record: dict[str, Any] | None = None) -> dict:
    """The ``open_clip_config.json`` of an export: teacher text tower, student image tower, teacher preprocessing."""
    identity = teacher.identity
    model_cfg = copy.deepcopy(open_clip.get_model_config(identity.name))
    model_cfg["vision_cfg"] = clip_vision_cfg(student_name, identity.image_size)
    model_cfg["quick_gelu"] = identity.quick_gelu  # the text tower's activation (OpenAI weights: QuickGELU)
    preprocess_cfg = {**identity.preprocess_cfg(), "size": list(identity.image_size)}
    ours = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "student": student_name,
        "teacher": identity.as_dict(),
        **(record or {}),
    }
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg, RECORD_KEY: ours}


def _is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export (a readable config with our record); anything else is not one."""
    config = folder / CONFIG_FILE
    try:
        record = read_json(config) if config.is_file() else None
    except (OSError, ValueError, RecursionError, SrwError):
        return False
    return isinstance(record, dict) and isinstance(record.get(RECORD_KEY), dict)


def export_distilled_clip(
    student: torch.nn.Module,
    teacher: ClipTeacher,
    student_name: str,
    out: Path,
    record: dict[str, Any] | None = None,
) -> Path:
    """Write the student with the teacher's text tower as an open_clip ``local-dir:`` folder.

    Both files are written under temporary names in ``out``, checked by loading them with open_clip, and
    only then renamed over the previous ones: a failed export changes nothing. An earlier export at
    ``out`` gets its two files replaced, and nothing else in the folder is touched (the user's own files
    there stay); any other non-empty folder is refused.

    Args:
        student: from :func:`mobilesam_srw.clip.student.build_clip_student` (trained).
        teacher: the teacher it was distilled from (its text tower, config and preprocessing).
        student_name: the student's registry name or ``timm:<name>``.
        out: the export folder.
        record: extra JSON-able facts to keep under ``mobilesam_srw`` (run, loss, tau, ...).
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_export(out))):
        raise SrwError(f"{out} exists and is not an earlier export; choose another output folder")
    config = distilled_clip_config(teacher, student_name, record)
    text_state = {k: v for k, v in teacher.model.state_dict().items() if not k.startswith("visual.")}
    student_state = {f"visual.{k}": v for k, v in student.state_dict().items()}
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in {**text_state, **student_state}.items()}
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with write_failures(out / WEIGHTS_FILE), atomic_path(out / WEIGHTS_FILE) as weights, \
                atomic_path(out / CONFIG_FILE) as config_file:
            with open(weights, "r+b") as stream:  # the file atomic_path made (safetensors' save_file would replace it)
                stream.write(safetensors_bytes(state, metadata={"format": EXPORT_FORMAT}))
            config_file.write_text(json.dumps(config, indent=2) + "\n")
            with tempfile.TemporaryDirectory(prefix=".export-check", dir=out) as check:  # ours alone, removed
                for name, written in ((WEIGHTS_FILE, weights), (CONFIG_FILE, config_file)):
                    try:
                        os.link(written, Path(check) / name)
                    except OSError:  # a file system without hard links
                        shutil.copyfile(written, Path(check) / name)
                load_distilled_clip(Path(check))  # open_clip must build it and take every weight (strict)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a folder we made for nothing goes
        raise
    return out


def read_export_record(path: Path) -> dict[str, Any]:
    """The ``mobilesam_srw`` record of an export folder (format, student, teacher identity, ...)."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise SrwError(f"{path} is not a distilled CLIP export (no {CONFIG_FILE})")
    try:
        record = read_json(config_file).get(RECORD_KEY)
    except (ValueError, AttributeError, RecursionError) as error:
        raise SrwError(f"cannot read {config_file}: {error}") from None
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT:
        raise SrwError(f"{path} is an open_clip folder but not a mobilesam-srw export")
    if record.get("version") != EXPORT_VERSION:
        raise SrwError(f"{path} is export version {record.get('version')}; this release reads {EXPORT_VERSION}")
    if not (path / WEIGHTS_FILE).is_file():
        raise SrwError(f"{path} has no {WEIGHTS_FILE}; open_clip would build random weights")
    return record


def load_distilled_clip(
    path: Path, teacher_name: str | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """An open_clip ``CLIP`` whose ``.visual`` is the student and whose text tower is the teacher's.

    The model is in eval mode with its parameters frozen, as the teacher is (PyTorch's attention
    takes another kernel when parameters require gradients, with float differences of ~1e-6); call
    ``model.requires_grad_(True)`` to fine-tune it.

    Args:
        path: an export folder written by :func:`export_distilled_clip`.
        teacher_name: if given, the open_clip name the export's teacher must have.
        device: where to put the model.

    ``open_clip.get_tokenizer(f"local-dir:{path}")`` is the teacher's tokenizer, and
    ``open_clip.create_model_and_transforms(f"local-dir:{path}")`` also returns the teacher's preprocessing.
    """
    path = Path(path)
    record = read_export_record(path)
    exported_teacher = record.get("teacher", {}).get("name")
    if teacher_name is not None and exported_teacher != teacher_name:
        raise SrwError(f"{path} was distilled from {exported_teacher}, not {teacher_name}")
    try:
        model = open_clip.create_model(f"local-dir:{path.resolve()}", weights_only=True, device=device)
    except (RuntimeError, ValueError, KeyError, OSError) as error:  # e.g. a strict load naming mismatched keys
        message = " ".join(str(error).split()) or type(error).__name__
        raise SrwError(f"cannot load the export {path}: {message[:300]}") from None
    return model.eval().requires_grad_(False)
