"""Near-duplicate search over 64-bit perceptual hashes.

All pairwise Hamming distances are computed with numpy in blocks (XOR + popcount), which for
a few thousand images is a few million 64-bit operations; then a greedy pass keeps the best
image of each group (larger, then sharper) and marks the rest as duplicates of a kept one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Pair = tuple[int, int, int]  # i < j, Hamming distance

_BYTE_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def popcount64(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (numpy >= 2 has a ufunc; numpy 1.26 gets a byte table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.uint8)
    as_bytes = values.view(np.uint8).reshape(values.shape + (8,))
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


def near_duplicate_pairs(
    hashes: Sequence[int], threshold: int, mirrored: Sequence[int] | None = None, block: int = 512
) -> list[Pair]:
    """Every pair (i, j), i < j, whose hashes differ in at most `threshold` bits.

    With `mirrored` (the hash of each image flipped left-right) a mirrored copy counts too.
    """
    plain = np.asarray([int(h) for h in hashes], dtype=np.uint64)
    flipped = None if mirrored is None else np.asarray([int(h) for h in mirrored], dtype=np.uint64)
    count = len(plain)
    pairs: list[Pair] = []
    for start in range(0, count, block):
        rows = plain[start : start + block, None]
        distance = popcount64(rows ^ plain[None, :])
        if flipped is not None:
            distance = np.minimum(distance, popcount64(rows ^ flipped[None, :]))
        row_index, col_index = np.nonzero(distance <= threshold)
        for r, c in zip(row_index.tolist(), col_index.tolist(), strict=True):
            i = start + r
            if c > i:
                pairs.append((i, c, int(distance[r, c])))
    return pairs


def choose_keepers(count: int, pairs: Sequence[Pair], rank: Sequence[tuple[float, ...]]) -> dict[int, tuple[int, int]]:
    """Greedy: best-ranked first; an image near an already kept one is dropped.

    Returns {dropped index: (kept index it duplicates, distance)}. Each dropped image is
    near a *kept* one, so chains (A~B, B~C, A not ~ C) never drop an image for a lost one.
    """
    neighbours: dict[int, list[tuple[int, int]]] = {}
    for i, j, distance in pairs:
        neighbours.setdefault(i, []).append((j, distance))
        neighbours.setdefault(j, []).append((i, distance))
    order = sorted(range(count), key=lambda i: (tuple(-v for v in rank[i]), i))
    position = {index: place for place, index in enumerate(order)}
    kept: set = set()
    dropped: dict[int, tuple[int, int]] = {}
    for i in order:
        near_kept = [(distance, position[j], j) for j, distance in neighbours.get(i, []) if j in kept]
        if near_kept:
            distance, _, keeper = min(near_kept)
            dropped[i] = (keeper, distance)
        else:
            kept.add(i)
    return dropped
