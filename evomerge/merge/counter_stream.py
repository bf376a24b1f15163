"""The default random stream of DARE and DELLA masks: counter-based, so a draw is a pure function of (recipe
seed, model, tensor name, element index). Chunk sizes, threads and devices never change a mask, and the
statistics pass and the merge pass draw the same mask without storing it.

Each element's 24 uniform bits are splitmix64's finaliser of ``key + index * M1`` (``key`` from a hash of the
seed, model and tensor name); entry ``j`` is kept where they are below ``round(p * 2**24)``. The fused CPU
kernels compute the same integers in numba (:mod:`evomerge.merge.methods._cpu_kernels`); :func:`uniform_bits`
is the torch version (any device), and the two agree bit for bit.
"""

from __future__ import annotations

import hashlib

M1 = 0x9E3779B97F4A7C15
M2 = 0xBF58476D1CE4E5B9
M3 = 0x94D049BB133111EB
S1, S2, S3 = 30, 27, 31
FINAL_SHIFT = 40  # keep the top 24 bits
ONE = 1 << 24  # a probability of 1 on the 24-bit scale


def stream_key(seed: int, model: str, tensor: str) -> int:
    """The stream's 64-bit key for one source tensor."""
    digest = hashlib.blake2b(f"{seed}\0{model}\0{tensor}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def threshold(p: float) -> int:
    """Keep-probability ``p`` on the 24-bit scale (``u24 < threshold`` keeps)."""
    return max(0, min(ONE, round(float(p) * ONE)))


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def uniform_bits(key: int, index0: int, numel: int, device="cpu"):
    """The 24-bit draws of elements ``index0 .. index0 + numel - 1`` as an int64 tensor (torch; wrapping int64
    products are the uint64 products' bits)."""
    import torch

    def srl(z, s: int):  # logical right shift of int64 bits
        return torch.bitwise_right_shift(z, s).bitwise_and_((1 << (64 - s)) - 1)

    z = torch.arange(index0, index0 + numel, dtype=torch.int64, device=device)
    z.mul_(_signed(M1)).add_(_signed(key))
    z = z.bitwise_xor_(srl(z, S1)).mul_(_signed(M2))
    z = z.bitwise_xor_(srl(z, S2)).mul_(_signed(M3))
    z = z.bitwise_xor_(srl(z, S3))
    return srl(z, FINAL_SHIFT)
