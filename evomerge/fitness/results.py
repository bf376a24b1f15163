"""Per-item results of one model on a set of lm-eval tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass
class ItemResults:
    """``scores[task][item_id]`` = per-item score (0/1 for exact match or accuracy); ``metrics[task]`` = the
    mean over the items evaluated; ``outputs[task][item_id]`` = the model's filtered response (optional)."""

    scores: dict[str, dict[int, float]]
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, dict[int, Any]] = field(default_factory=dict)

    @classmethod
    def from_scores(cls, scores: Mapping[str, Mapping[int, float]], outputs=None) -> "ItemResults":
        sc = {t: {int(i): float(s) for i, s in v.items()} for t, v in scores.items()}
        return cls(scores=sc, metrics={t: float(np.mean(list(v.values()))) if v else float("nan")
                                       for t, v in sc.items()}, outputs=dict(outputs or {}))

    def n_items(self) -> int:
        return sum(len(v) for v in self.scores.values())

    def subset(self, items: Mapping[str, list[int]]) -> "ItemResults":
        """The results restricted to ``items[task]`` (every id must be present)."""
        return ItemResults.from_scores({t: {i: self.scores[t][i] for i in ids} for t, ids in items.items()},
                                       {t: {i: self.outputs[t][i] for i in ids if i in self.outputs.get(t, {})}
                                        for t, ids in items.items() if t in self.outputs})

    def merged(self, other: "ItemResults") -> "ItemResults":
        """These results and ``other``'s (more items of the same model) in one."""
        scores = {t: dict(v) for t, v in self.scores.items()}
        outputs = {t: dict(v) for t, v in self.outputs.items()}
        for t, v in other.scores.items():
            scores.setdefault(t, {}).update(v)
        for t, v in other.outputs.items():
            outputs.setdefault(t, {}).update(v)
        return ItemResults.from_scores(scores, outputs)

    def to_dict(self) -> dict:
        """JSON-ready (item ids become strings)."""
        return {"scores": {t: {str(i): s for i, s in v.items()} for t, v in self.scores.items()},
                "metrics": self.metrics,
                "outputs": {t: {str(i): o for i, o in v.items()} for t, v in self.outputs.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ItemResults":
        res = cls.from_scores({t: {int(i): s for i, s in v.items()} for t, v in d["scores"].items()},
                              {t: {int(i): o for i, o in v.items()} for t, v in d.get("outputs", {}).items()})
        return res
