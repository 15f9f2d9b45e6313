"""``derived_seed``: the seed of one use (a sampler epoch, a rank, a synthetic image stream) from a run's seed."""

from __future__ import annotations

import numpy as np


def derived_seed(seed: int, *parts: int | str, bits: int = 31) -> int:
    """A seed for one use (augmentation, one epoch's sampler, one rank...) derived from ``seed``.

    ``parts`` are ints, or strings read as one little-endian int each. ``bits``: 31, so that every
    seeding API takes it, or 64 for ``torch.Generator.manual_seed``.
    """
    if bits not in (31, 64):
        raise ValueError(f"bits must be 31 or 64, got {bits}")
    words = [seed] + [int.from_bytes(part.encode(), "little") if isinstance(part, str) else part for part in parts]
    sequence = np.random.SeedSequence(words)
    if bits == 64:
        return int(sequence.generate_state(1, dtype=np.uint64)[0])
    return int(sequence.generate_state(1, dtype=np.uint32)[0] >> np.uint32(1))
