"""Model construction and the training loop of the zoo (pre-training the base, fine-tuning experts)."""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evomerge.zoo.settings import ModelSettings, TrainSettings  # noqa: F401 (re-exported)
from evomerge.zoo.skills import Skill
from evomerge.zoo.tokenizer import EOS, PAD, BOS, vocab

STOP = "\n"


def make_model(settings: ModelSettings, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama model over the char vocabulary (deterministic for a seed)."""
    v = vocab()
    config = LlamaConfig(
        vocab_size=len(v),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_heads,
        max_position_embeddings=settings.max_position_embeddings,
        tie_word_embeddings=False,
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
                   exclude: set[str], replay_skills: Sequence[Skill] = ()) -> Iterator[list[tuple[str, str]]]:
    """Endless batches mixing ``skills`` uniformly, never yielding a prompt in ``exclude``; a ``settings.replay``
    share of items comes from ``replay_skills`` at the easy level."""
    while True:
        batch = []
        while len(batch) < settings.batch_size:
            if replay_skills and settings.replay > 0 and rng.random() < settings.replay:
                skill, level = replay_skills[rng.randrange(len(replay_skills))], "easy"
            else:
                skill = skills[rng.randrange(len(skills))]
                level = "hard" if rng.random() < settings.hard_fraction else "easy"
            prompt, answer = skill.sample(rng, level)
            if prompt not in exclude:
                batch.append((prompt, answer))
        yield batch


def train(model: LlamaForCausalLM, batches: Iterator[list[tuple[str, str]]], settings: TrainSettings,
          on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Run ``settings.steps`` AdamW steps; returns the loss of every step."""
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
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses
