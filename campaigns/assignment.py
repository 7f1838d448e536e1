"""A/B assignment: which contacts are held out, which are in the auto-winner test group, and which variant each gets.

Deterministic per (campaign, seed, contact): the same contact gets the same variant in every run of a recurring
campaign, and changing the campaign's ``assignment_seed`` re-randomizes. Two independent uniform numbers come from
SHA-256 of ``campaign:seed:contact``: the first decides holdout (below ``holdout_percent``) and then the variant by
weight; the second decides the auto-winner test group. Holdout is decided first, so it is the same whatever the
variants' weights.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass

SCALE = 2**64


def uniforms(campaign_id: int, seed: int, contact_id: int) -> tuple[float, float]:
    digest = hashlib.sha256(f"{campaign_id}:{seed}:{contact_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / SCALE, int.from_bytes(digest[8:16], "big") / SCALE


@dataclass(frozen=True, slots=True)
class Assignment:
    variant_id: int | None  # None: holdout, or waiting for the auto-winner
    holdout: bool
    in_test: bool


class Assigner:
    def __init__(
        self,
        *,
        campaign_id: int,
        seed: int,
        variants: list[tuple[int, int]],
        holdout_percent: int,
        test_percent: int | None = None,
    ) -> None:
        """``variants``: (variant id, weight) in a stable order; ``test_percent``: None unless auto-winner."""
        if not variants:
            raise ValueError("a campaign needs at least one variant")
        self.campaign_id = campaign_id
        self.seed = seed
        self.holdout = holdout_percent / 100
        self.test = None if test_percent is None else test_percent / 100
        total = sum(weight for _vid, weight in variants)
        self.ids = [vid for vid, _weight in variants]
        bounds, running = [], 0
        for _vid, weight in variants:
            running += weight
            bounds.append(running / total)
        self.bounds = bounds

    def assign(self, contact_id: int) -> Assignment:
        u, v = uniforms(self.campaign_id, self.seed, contact_id)
        if u < self.holdout:
            return Assignment(None, True, False)
        in_test = self.test is None or v < self.test
        if not in_test:
            return Assignment(None, False, False)
        # Rescale u over the non-holdout part so the weights split it exactly.
        x = (u - self.holdout) / (1 - self.holdout) if self.holdout < 1 else 0.0
        index = min(bisect_right(self.bounds, x), len(self.ids) - 1)
        return Assignment(self.ids[index], False, self.test is not None)
