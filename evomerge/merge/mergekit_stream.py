"""The random stream of a mergekit merge, for recipes with ``random_stream: mergekit`` (DARE, DELLA).

How ``mergekit-yaml CONFIG OUT --random-seed SEED`` draws its masks (mergekit 0.1.x, read from its source and
checked bit for bit by ``tests/test_merge_parity.py``): ``transformers.set_seed(SEED)`` seeds torch's global
generator once, before any work; its task graph then runs the tensors in the order of their names (a
lexicographic topological sort keyed by the tensor name), and each tensor's merge sparsifies the sources in
the config's model order (the base excluded), each with one ``torch.bernoulli`` over the whole tensor (float32
probabilities: ``density`` for DARE, DELLA's rank-dependent ones, rows along dimension 1 of the tensor); a
source whose density is 1 draws nothing.

:class:`MergekitStream` is that sequence of draws over the tensors of one recipe. The engine may ask for the
tensors in any order (storage order, live-parameter order): asking for a later draw first fast-forwards the
generator by drawing the skipped ones (a draw consumes the same amount of the stream for any probabilities of
one shape), remembering each position's generator state (5 KB each), so a skipped draw is replayed exactly
when its tensor comes. Every draw covers a whole tensor, so this mode merges DARE / DELLA tensors in one chunk
(the whole tensor and its mask in memory, instead of 512K-element chunks).
"""

from __future__ import annotations

from typing import Sequence

import torch


class MergekitStream:
    """The masks of one merge, in mergekit's order: ``draws`` lists ``(tensor name, source index, shape)`` for
    every tensor and source that is sparsified at random (density < 1)."""

    def __init__(self, seed: int, draws: Sequence[tuple[str, int, tuple[int, ...]]], device="cpu"):
        self.order = sorted(draws, key=lambda d: (d[0], d[1]))
        self.position = {(name, i): k for k, (name, i, _) in enumerate(self.order)}
        self.device = torch.device(device)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seed))
        self.next = 0  # position of the draw self.gen makes next
        self.states: dict[int, torch.Tensor] = {}  # position -> generator state before its draw

    def draw(self, name: str, i: int, probs: torch.Tensor) -> torch.Tensor:
        """``torch.bernoulli(probs)`` as mergekit draws it for source ``i`` of tensor ``name`` (float32 0/1)."""
        k = self.position.get((name, i))
        if k is None:
            raise KeyError(f"no random draw planned for source {i} of {name}")
        if k < self.next:  # a position passed already (fast-forwarded over, or asked again): replay it
            g = torch.Generator(device=self.device)
            g.set_state(self.states[k])
            return torch.bernoulli(probs, generator=g)
        while self.next < k:
            self.states[self.next] = self.gen.get_state()
            shape = self.order[self.next][2]
            torch.bernoulli(torch.full(shape, 0.5, dtype=torch.float32, device=self.device), generator=self.gen)
            self.next += 1
        self.states[k] = self.gen.get_state()
        self.next += 1
        return torch.bernoulli(probs, generator=self.gen)
