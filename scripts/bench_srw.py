"""Benchmark the SRW core: exact O(N*D) average similarity vs the naive N x N matrix,
and SRW-weighted feature MSE vs plain MSE (forward + backward).

    python scripts/bench_srw.py --out bench_out/srw.json

Each timed case runs in its own spawned process, so its peak-RSS increase over the
inputs is its own working memory (``ru_maxrss``, a high-water mark per process).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench import machine_description, seconds_per_call, write_json

from mobilesam_srw.losses import feature_mse
from mobilesam_srw.srw import average_similarity, reweighted_mean, srw_weights


def naive_average_similarity(features: torch.Tensor) -> torch.Tensor:
    """Eq. 4 with the full ``[B, N, N]`` cosine matrix."""
    unit = F.normalize(features.float(), dim=-1)
    return (unit @ unit.transpose(-1, -2)).mean(dim=-1)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _case(name: str, shape: tuple[int, ...], repeats: int, queue) -> None:
    torch.manual_seed(0)
    if name in ("exact_avesim", "naive_avesim"):
        features = torch.randn(*shape)
        method = average_similarity if name == "exact_avesim" else naive_average_similarity
        run = lambda: method(features)  # noqa: E731
    else:
        teacher = torch.randn(*shape)
        student = torch.randn(*shape, requires_grad=True)
        avesim = average_similarity(teacher.flatten(2).transpose(1, 2))

        def run():
            student.grad = None
            if name == "plain_mse":
                loss = F.mse_loss(student, teacher)
            else:
                patch_avesim = avesim if name == "srw_mse" else average_similarity(teacher.flatten(2).transpose(1, 2))
                weights = srw_weights(patch_avesim, tau=0.5)
                loss = reweighted_mean(feature_mse(student, teacher, dim=1), weights)
            loss.backward()

    baseline = _peak_rss_mib()
    seconds = seconds_per_call(run, repeats)
    queue.put({"case": name, "shape": list(shape), "seconds": seconds, "peak_extra_mib": _peak_rss_mib() - baseline})


def run_case(name: str, shape: tuple[int, ...], repeats: int) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_case, args=(name, shape, repeats, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--avesim-shape", type=int, nargs=3, default=[64, 4096, 256], metavar=("B", "N", "D"))
    parser.add_argument("--naive-batch", type=int, default=None, help="run the naive matrix on this many groups only")
    parser.add_argument("--mse-shape", type=int, nargs=4, default=[8, 256, 64, 64], metavar=("B", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench_out/srw.json"))
    args = parser.parse_args()

    batch, items, dims = args.avesim_shape
    naive_batch = args.naive_batch or batch
    exact = run_case("exact_avesim", (batch, items, dims), args.repeats)
    naive = run_case("naive_avesim", (naive_batch, items, dims), max(1, args.repeats // 2))
    naive_scaled = naive["seconds"] * batch / naive_batch
    mse_shape = tuple(args.mse_shape)
    plain = run_case("plain_mse", mse_shape, args.repeats)
    srw = run_case("srw_mse", mse_shape, args.repeats)
    srw_with_avesim = run_case("srw_mse_with_avesim", mse_shape, args.repeats)

    results = {
        "machine": machine_description(),
        "cases": [exact, naive, plain, srw, srw_with_avesim],
        "naive_on_slice": naive_batch != batch,
        "avesim_speedup": naive_scaled / exact["seconds"],
        "srw_mse_over_plain": srw["seconds"] / plain["seconds"],
        "srw_mse_with_avesim_over_plain": srw_with_avesim["seconds"] / plain["seconds"],
    }
    print(results["machine"])
    print(f"{'case':<22}{'shape':<22}{'ms':>10}{'peak extra MiB':>16}")
    for case in results["cases"]:
        shape = "x".join(map(str, case["shape"]))
        print(f"{case['case']:<22}{shape:<22}{case['seconds'] * 1e3:>10.1f}{case['peak_extra_mib']:>16.0f}")
    slice_note = f" (naive run on {naive_batch}/{batch} groups, time scaled)" if results["naive_on_slice"] else ""
    print(f"average_similarity speed-up over the N x N matrix: {results['avesim_speedup']:.1f}x{slice_note}")
    print(f"SRW-MSE / plain MSE, forward+backward: {results['srw_mse_over_plain']:.2f}x "
          f"({results['srw_mse_with_avesim_over_plain']:.2f}x when avesim is computed in the step)")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
