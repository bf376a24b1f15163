"""Model construction and the training loop of the zoo (pre-training the base, fine-tuning experts)."""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Mapping, Optional, Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evomerge.zoo.decode import exact_match
from evomerge.zoo.settings import Calibration, ModelSettings, TrainSettings, llama_fields  # noqa: F401 (re-exported)
from evomerge.zoo.skills import Skill
from evomerge.zoo.tokenizer import EOS, PAD, BOS, vocab

STOP = "\n"


def make_model(settings: ModelSettings, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama model over the char vocabulary (deterministic for a seed)."""
    v = vocab()
    config = LlamaConfig(
        **llama_fields(settings, len(v)),
        pad_token_id=v[PAD],
        bos_token_id=v[BOS],
        eos_token_id=v[EOS],
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def encode_batch(pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded ids for ``prompt + answer + "\\n"``; the loss covers only the answer and the newline."""
    v = vocab()
    rows = [([v[c] for c in p], [v[c] for c in a + STOP]) for p, a in pairs]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), v[PAD], dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (p, a) in enumerate(rows):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        labels[i, len(p):n] = torch.tensor(a)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sample_batches(skills: Sequence[Skill], settings: TrainSettings, rng: random.Random,
                   exclude: set[str], replay_skills: Sequence[Skill] = (),
                   weights: Mapping[str, float] = {}) -> Iterator[list[tuple[str, str]]]:
    """Endless batches mixing ``skills`` uniformly, never yielding a prompt in ``exclude``; a ``settings.replay``
    share of items comes from ``replay_skills`` at the easy level. ``weights`` (skill -> relative weight,
    1 if absent; the caller may change it between batches) makes the mix non-uniform."""
    while True:
        batch = []
        while len(batch) < settings.batch_size:
            if replay_skills and settings.replay > 0 and rng.random() < settings.replay:
                skill, level = replay_skills[rng.randrange(len(replay_skills))], "easy"
            else:
                if weights:
                    skill = rng.choices(skills, [weights.get(s.name, 1.0) for s in skills])[0]
                else:  # the uniform draw as it always was, so builds without weights stay bit-identical
                    skill = skills[rng.randrange(len(skills))]
                level = "hard" if rng.random() < settings.hard_fraction else "easy"
            prompt, answer = skill.sample(rng, level)
            if prompt not in exclude:
                batch.append((prompt, answer))
        yield batch


def train(model: LlamaForCausalLM, batches: Iterator[list[tuple[str, str]]], settings: TrainSettings,
          on_step: Callable[[int, float], Optional[bool]] | None = None) -> list[float]:
    """Run ``settings.steps`` AdamW steps (fewer if ``on_step`` returns True); returns the loss of every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                            betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < settings.warmup:
            return (step + 1) / settings.warmup
        t = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
        return 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses = []
    for step in range(settings.steps):
        out = model(**encode_batch(next(batches)))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
        if on_step is not None and on_step(step, losses[-1]):
            break
    model.eval()
    return losses


class HardCalibration:
    """The base's hard-level check (see :class:`~evomerge.zoo.settings.Calibration`): an ``on_step`` hook that
    every ``cal.every`` steps scores fixed hard items per skill, sets ``weights`` (the batches' mix:
    ``cal.maintain`` for the skills at the target), keeps the best snapshot so far and asks to stop once every
    skill is at the target. ``finish()`` then loads the snapshot. ``history``: (step, {skill: accuracy});
    ``reached``: skill -> the first step it was at the target."""

    def __init__(self, model, tokenizer, skills: Sequence[Skill], cal: Calibration, seed: int, exclude: set[str]):
        self.model, self.tokenizer, self.cal = model, tokenizer, cal
        self.weights: dict[str, float] = {}
        self.reached: dict[str, int] = {}
        self.history: list[tuple[int, dict[str, float]]] = []
        self.best: Optional[tuple[float, int, dict]] = None  # (score, step, state dict)
        self.items = {}
        for skill in skills:
            rng, items = random.Random(f"calibrate-{seed}-{skill.name}"), []
            while len(items) < cal.items:
                prompt, answer = skill.sample(rng, "hard")
                if prompt not in exclude:
                    items.append({"prompt": prompt, "answer": answer})
            self.items[skill.name] = items

    def __call__(self, step: int, _loss: float) -> bool:
        if (step + 1) % self.cal.every:
            return False
        acc = {name: sum(exact_match(self.model, self.tokenizer, items)) / len(items)
               for name, items in self.items.items()}
        self.history.append((step + 1, acc))
        at_target = {name for name, a in acc.items() if a >= self.cal.target}
        for name in at_target:
            self.reached.setdefault(name, step + 1)
        self.weights.clear()
        self.weights.update({name: self.cal.maintain for name in at_target})
        score = sum(min(a, self.cal.target) for a in acc.values())
        if self.best is None or score > self.best[0]:
            self.best = (score, step + 1, {k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return len(at_target) == len(acc)

    def finish(self) -> Optional[int]:
        """Load the best checked snapshot into the model; returns its step (None if no check ran)."""
        if self.best is None:
            return None
        self.model.load_state_dict(self.best[2])
        return self.best[1]
