"""The demos on a quiet and on a loaded machine, in one run: their wall time and the loaded/quiet ratio.

Each demo runs in a process of its own (``srw-cls demo``, ``srw-sam demo``), first with no added load, then
beside ``--load`` busy-loop processes that this script starts (and stops) itself. ``--modes`` chooses the
thread settings: ``ours`` (the demos' own: one torch / OpenCV thread) and ``all-cores`` (``OMP_NUM_THREADS``
set to every core, which the demos then leave alone: the setting they had before issue 25). The 1-minute
load average is recorded before and after every run, so the background load of a shared machine is stated
next to each figure. Ratios are the numbers to read; absolute times depend on the machine and its load.

Where the kernel groups processes by session (``/proc/sys/kernel/sched_autogroup_enabled``), other users'
sessions each get their share of the CPU whatever this script does, and the busy loops compete with the
demo inside this session's share: "loaded / quiet" is then the cost of the stated load within that share.
``--cls-seeds``/``--cls-epochs`` and ``--sam-small`` make the demos smaller, so that the slow settings fit
in a run on a busy machine.

    python scripts/bench_demo_load.py --out bench_out/demo_load.json
    python scripts/bench_demo_load.py --demos cls --cls-seeds 2 --cls-epochs 10 --modes ours all-cores
    python scripts/bench_demo_load.py --cls-seeds 1 --cls-epochs 5 --sam-small   # as docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAM_SMALL = """
from pathlib import Path
from mobilesam_srw.commands.sam.demo import DemoConfig, resolve_teacher, run_demo
run_demo(DemoConfig.for_teacher(resolve_teacher("auto"), out=Path({out!r}), progress=False, train_images=8,
                                val_images=2, epochs=2, figures=1))
"""


def _spin() -> None:
    while True:
        pass


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def demo_command(demo: str, out: Path, args: argparse.Namespace) -> list[str]:
    if demo == "cls":
        return [sys.executable, "-m", "mobilesam_srw.cls", "demo", "--out", str(out), "--no-progress",
                "--seeds", str(args.cls_seeds), "--epochs", str(args.cls_epochs)]
    if args.sam_small:
        return [sys.executable, "-c", SAM_SMALL.format(out=str(out))]
    return [sys.executable, "-m", "mobilesam_srw", "demo", "--out", str(out), "--no-progress"]


def timed_run(demo: str, mode: str, load: int, args: argparse.Namespace) -> dict:
    """One demo run beside ``load`` busy processes; its wall time and the load average around it."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if mode == "all-cores":
        env["OMP_NUM_THREADS"] = str(cores())
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(load)]
    scratch = Path(tempfile.mkdtemp(prefix=f"bench_{demo}_"))
    try:
        for spinner in spinners:
            spinner.start()
        time.sleep(1 if load else 0)
        before = os.getloadavg()[0]
        started = time.perf_counter()
        result = subprocess.run(demo_command(demo, scratch / "out", args), env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        after = os.getloadavg()[0]
    finally:
        for spinner in spinners:
            spinner.terminate()
        for spinner in spinners:
            spinner.join()
        shutil.rmtree(scratch, ignore_errors=True)
    if result.returncode != 0:
        raise SystemExit(f"{demo} demo failed:\n{result.stderr[-2000:]}")
    return {"demo": demo, "mode": mode, "added_load": load, "seconds": round(seconds, 1),
            "loadavg_before": round(before, 2), "loadavg_after": round(after, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", nargs="+", choices=("cls", "sam"), default=["cls", "sam"])
    parser.add_argument("--modes", nargs="+", choices=("ours", "all-cores"), default=["ours", "all-cores"])
    parser.add_argument("--load", type=int, default=cores(), help="busy-loop processes of the loaded runs "
                                                                  "(default: one per core)")
    parser.add_argument("--cls-seeds", type=int, default=5, help="srw-cls demo --seeds (default: the demo's 5)")
    parser.add_argument("--cls-epochs", type=int, default=20, help="srw-cls demo --epochs (default: the demo's 20)")
    parser.add_argument("--sam-small", action="store_true", help="srw-sam demo at 8 + 2 images, 2 epochs, 1 figure "
                                                                  "(every stage still runs)")
    parser.add_argument("--skip", nargs="*", default=[], help="runs to leave out, as demo:mode:load")
    parser.add_argument("--out", type=Path, help="write the runs as JSON here too")
    args = parser.parse_args()

    runs = []
    for demo in args.demos:
        for mode in args.modes:
            for load in (0, args.load):
                if f"{demo}:{mode}:{load}" not in args.skip:
                    runs.append(timed_run(demo, mode, load, args))
                    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(f"\n{cores()} cores; loaded = {args.load} busy-loop processes started by this script\n")
    print("| demo | threads | quiet s (load avg) | loaded s (load avg) | loaded / quiet |")
    print("|---|---|---|---|---|")
    for demo in args.demos:
        for mode in args.modes:
            quiet, loaded = (next((r for r in runs if (r["demo"], r["mode"], r["added_load"]) == (demo, mode, load)),
                                  None) for load in (0, args.load))
            cells = [f"{r['seconds']} ({r['loadavg_before']}-{r['loadavg_after']})" if r else "not run"
                     for r in (quiet, loaded)]
            ratio = f"{loaded['seconds'] / quiet['seconds']:.2f}x" if quiet and loaded else "-"
            print(f"| {demo} | {mode} | {cells[0]} | {cells[1]} | {ratio} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cores": cores(), "load": args.load, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
