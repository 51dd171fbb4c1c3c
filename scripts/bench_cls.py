"""SRW's share of a classification step: resnet32x4 -> resnet8x4 on CIFAR-sized images, batch 64.

A step is the engine's: the teacher's forward (no gradient), SRW's weights over the batch (Eq. 4-5 on the
teacher's pooled features), the student's forward and backward with KD + CE, the optimiser. SRW's share
is the time of the weights (``engine.weighting.step_weights``) over the whole step, each timed alone.

    python scripts/bench_cls.py [--repeats 10] [--out bench_out/cls.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from mobilesam_srw.cls import models
from mobilesam_srw.cls.methods import KD, method_settings
from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.engine.task import Targets
from mobilesam_srw.engine.weighting import step_weights

sys.path.insert(0, str(Path(__file__).parent))
from _bench import machine_description, seconds_per_call, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = models.create("resnet32x4", 100).eval()
    student = KD(models.create("resnet8x4", 100), method_settings("kd", "cifar", "resnet32x4", "resnet8x4"))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    images, labels = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 100, (args.batch,))
    context = DistributedContext()

    def weights(features: torch.Tensor):
        return step_weights([Targets(features=features)], "batch", 0.7, "softmax", context, args.batch)

    def step(srw: bool) -> None:
        with torch.no_grad():
            logits, features = teacher(images)
        sample = weights(features["pooled_feat"]).sample[0] if srw else torch.full((args.batch,), 1 / args.batch)
        out = student(images)
        distill = student.distill(out, (logits, features), labels, 0)
        loss = (sample * distill).sum() + 0.1 * F.cross_entropy(out[0], labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with torch.no_grad():
        pooled = teacher(images)[1]["pooled_feat"]
    step(True)  # warm-up
    # SRW and plain steps alternate, and medians are kept, so a load that drifts hits both alike
    srw_times, plain_times = [], []
    for _ in range(args.repeats):
        srw_times.append(seconds_per_call(lambda: step(True), 1, warmup=0))
        plain_times.append(seconds_per_call(lambda: step(False), 1, warmup=0))
    results = {
        "machine": machine_description(),
        "batch": args.batch,
        "step_srw_s": statistics.median(srw_times),
        "step_plain_s": statistics.median(plain_times),
        "srw_weights_s": seconds_per_call(lambda: weights(pooled), args.repeats * 20),
    }
    results["srw_share_of_step"] = results["srw_weights_s"] / results["step_srw_s"]
    results["step_ratio_srw_over_plain"] = results["step_srw_s"] / results["step_plain_s"]
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, results)


if __name__ == "__main__":
    main()
