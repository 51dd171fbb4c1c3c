"""mobilesam-srw: knowledge distillation with Sample-wise Re-Weighting (Yu et al., ACCV 2024).

The core (this package) holds the SRW weights, per-item losses, models and training;
the stages ``mobilesam_srw.data_prep``, ``mobilesam_srw.eval`` and ``mobilesam_srw.viz``
build on it.
"""

from importlib.metadata import PackageNotFoundError, version

from mobilesam_srw.errors import SrwError
from mobilesam_srw.losses import dkd_loss, feature_mse, fitnet_loss, kd_loss
from mobilesam_srw.srw import average_similarity, reweighted_mean, srw_weights
from mobilesam_srw.srw_batch import SRWLoss, srw_loss

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
