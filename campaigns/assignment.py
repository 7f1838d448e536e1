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


def _first(predicate, low: int = 0, high: int = SCALE) -> int:
    """The smallest integer n in [low, high] for which ``predicate`` (False then True as n grows) holds; ``high``
    when it holds for none below it."""
    while low < high:
        middle = (low + high) // 2
        if predicate(middle):
            high = middle
        else:
            low = middle + 1
    return low


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``Assigner.assign`` as comparisons of the digest's two 64-bit integers (``n``: bytes 1–8, ``m``: bytes
    9–16, unsigned big-endian), for SQL: holdout when ``n < holdout``; in the auto-winner test group when ``test``
    is None or ``m < test``; otherwise variant ``ids[k]`` where k is the number of ``bounds`` ≤ n (at most the last
    index). Found by bisection over the same float expressions ``assign`` evaluates, which are non-decreasing in n
    and m, so the SQL comparisons give exactly the same assignment."""

    holdout: int
    test: int | None
    bounds: tuple[int, ...]
    ids: tuple[int, ...]


def thresholds(assigner: Assigner) -> Thresholds:
    holdout = _first(lambda n: not n / SCALE < assigner.holdout)
    test = None if assigner.test is None else _first(lambda m: not m / SCALE < assigner.test)

    def x(n: int) -> float:
        return (n / SCALE - assigner.holdout) / (1 - assigner.holdout) if assigner.holdout < 1 else 0.0

    bounds = tuple(_first(lambda n, b=b: b <= x(n)) for b in assigner.bounds)
    return Thresholds(holdout, test, bounds, tuple(assigner.ids))
