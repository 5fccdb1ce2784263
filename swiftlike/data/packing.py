"""Greedy bin packing of encoded rows into bins of at most max_length tokens."""
from __future__ import annotations


def pack(encoded: list, max_length: int) -> list:
    """First-fit decreasing: a list of bins, each a list of the encoded rows it holds (boundaries kept).

    Rows are placed longest first into the first bin with room; a segment tree over the bins' free space finds
    that bin in O(log n), so packing stays fast for 100k+ rows.
    """
    lengths = [len(r["input_ids"]) for r in encoded]
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    if too_long:
        raise ValueError(f"{len(too_long)} row(s) are longer than max_length={max_length} (first: row "
                         f"{too_long[0]}, {lengths[too_long[0]]} tokens); encode with max_length/truncation")
    order = sorted(range(len(encoded)), key=lambda i: -lengths[i])  # stable: equal lengths keep data order
    size = 1
    while size < max(1, len(encoded)):
        size *= 2
    free = [0] * (2 * size)  # max free space per subtree; leaves are bins, unopened bins have max_length
    for leaf in range(size):
        free[size + leaf] = max_length
    for node in range(size - 1, 0, -1):
        free[node] = max(free[2 * node], free[2 * node + 1])
    bins: list[list] = []
    for i in order:
        need = lengths[i]
        node = 1
        while node < size:  # descend to the leftmost bin with enough room
            node = 2 * node if free[2 * node] >= need else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(encoded[i])
        free[node] -= need
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins
