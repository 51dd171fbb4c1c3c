"""SAM precompute's input kinds (``--sa1b``, ``--images``, ``--coco``): name -> its source's ``discover``."""

from __future__ import annotations

from mobilesam_srw.data_prep.sources import Discover


def source_registry() -> dict[str, Discover]:
    """Input kind -> its ``discover`` (imported here, so each source module imports only the shared types)."""
    from mobilesam_srw.data_prep.sam import coco, image_folder, sa1b

    return {"sa1b": sa1b.discover, "images": image_folder.discover, "coco": coco.discover}
