"""mobilesam-srw: knowledge distillation with Sample-wise Re-Weighting (Yu et al., ACCV 2024).

The core (this package) holds the SRW weights, per-item losses, models and training;
the stages ``mobilesam_srw.data_prep``, ``mobilesam_srw.eval`` and ``mobilesam_srw.viz``
build on it.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

from mobilesam_srw.errors import SrwError

# The formulas, imported when first used: the command lines import this package before every --help,
# and PyTorch takes seconds to import.
_LAZY = {**dict.fromkeys(("dkd_loss", "feature_mse", "fitnet_loss", "kd_loss"), "mobilesam_srw.losses"),
         **dict.fromkeys(("average_similarity", "reweighted_mean", "srw_weights"), "mobilesam_srw.srw"),
         **dict.fromkeys(("SRWLoss", "srw_loss"), "mobilesam_srw.srw_batch")}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:
    __version__ = version("mobilesam-srw")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "SRWLoss",
    "SrwError",
    "average_similarity",
    "dkd_loss",
    "feature_mse",
    "fitnet_loss",
    "kd_loss",
    "reweighted_mean",
    "srw_loss",
    "srw_weights",
    "__version__",
]
