"""eval's progress bar: prompts (with rate and ETA) rather than whole images, which take minutes each."""

from __future__ import annotations

from tqdm import tqdm


class PromptBar:
    """A tqdm bar counting prompts; the images done go in its postfix.

    Args:
        images: images to evaluate, over all ranks.
        prompts_per_image: prompts of one image (grid, everything); None when it varies (gt: the
            annotations), and then the total is estimated from the images done so far.
        world_size: ranks; rank 0's counts stand for every rank's (each takes every world_size-th image).
        disable: no bar.
    """

    def __init__(self, images: int, prompts_per_image: int | None, world_size: int = 1, disable: bool = False) -> None:
        self.images, self.prompts_per_image, self.world_size = images, prompts_per_image, world_size
        self.images_done, self.prompts, self.in_image = 0, 0, 0
        total = images * prompts_per_image if prompts_per_image is not None else None
        self.bar = tqdm(total=total, unit="prompt", desc="eval", disable=disable, dynamic_ncols=True)

    def __enter__(self) -> "PromptBar":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def prompts_done(self, count: int) -> None:
        """``count`` prompts of this rank's current image are done."""
        self.in_image += count
        self._advance(count * self.world_size)

    def image_done(self) -> None:
        """This rank's current image is done (or was skipped: its prompts count as done)."""
        if self.prompts_per_image is not None and self.in_image < self.prompts_per_image:
            self._advance((self.prompts_per_image - self.in_image) * self.world_size)
        self.in_image = 0
        self.images_done = min(self.images, self.images_done + self.world_size)
        if self.prompts_per_image is None and self.images_done:
            self.bar.total = max(self.prompts, round(self.prompts * self.images / self.images_done))
        self.bar.set_postfix_str(f"{self.images_done}/{self.images} images", refresh=False)
        self.bar.refresh()

    def _advance(self, count: int) -> None:
        self.prompts += count
        self.bar.update(count)
