"""KD, KD+SRW, DKD, DKD+SRW on scikit-learn's handwritten digits, over seeds (``docs/experiments.md``).

The experiment is ``srw-cls demo`` at its defaults (5 seeds, 20 epochs, tau 0.7); this script runs it
with the seeds, epochs and tau given, and prints the report (mean ± std over seeds, Table 4's bands)::

    python scripts/experiment_cls_digits.py --out experiment_cls_digits
    python scripts/experiment_cls_digits.py --out experiment_cls_digits_tau1 --tau 1.0 --seeds 10

Finished runs are reused by a rerun of the same epochs and tau (more seeds add runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mobilesam_srw.commands.cls.demo import ClsDemoConfig, run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("experiment_cls_digits"))
    parser.add_argument("--seeds", type=int, default=ClsDemoConfig.seeds, help="seeds 0..N-1 per configuration")
    parser.add_argument("--epochs", type=int, default=ClsDemoConfig.epochs)
    parser.add_argument("--tau", type=float, default=ClsDemoConfig.tau)
    args = parser.parse_args()
    report = run_demo(ClsDemoConfig(out=args.out, seeds=args.seeds, epochs=args.epochs, tau=args.tau, progress=False))
    print(report.read_text())


if __name__ == "__main__":
    main()
