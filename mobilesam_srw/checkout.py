"""The guard against a core and stages from two different checkouts.

An editable install maps ``mobilesam_srw.data_prep``, ``.eval`` and ``.viz`` to the top-level folders of the
checkout it was made from; a second checkout run with the first one's environment (``python -m`` from its
root puts its own ``mobilesam_srw`` first on the path) would import the core from one tree and the stages
from the other, silently. Each stage's ``__init__`` calls :func:`check_same_checkout`.
"""

from __future__ import annotations

from pathlib import Path

from mobilesam_srw.errors import SrwError


class MixedCheckoutError(SrwError, ImportError):
    """A stage and the core come from different source trees (one line, as every :class:`SrwError`)."""


def check_same_checkout(stage_init: str, stage: str) -> None:
    """Refuse, with one line naming both paths, a stage whose folder is not beside the core's.

    Args:
        stage_init: the stage package's ``__init__.py`` (its ``__file__``).
        stage: its name, for the message (``mobilesam_srw.eval``).
    """
    import mobilesam_srw

    core = Path(mobilesam_srw.__file__).resolve().parent  # <checkout>/mobilesam_srw, or <site-packages>/mobilesam_srw
    folder = Path(stage_init).resolve().parent  # <checkout>/eval, or <site-packages>/mobilesam_srw/eval
    if folder.parent not in (core, core.parent):
        raise MixedCheckoutError(
            f"{stage} comes from {folder} but mobilesam_srw from {core}: two checkouts are mixed; "
            "install this checkout into its own environment (pip install -e .) or run from the other one"
        )
