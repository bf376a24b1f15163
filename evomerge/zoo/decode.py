"""Fast batched greedy decoding with a KV cache, and exact-match scoring with lm-eval's semantics
(generation cut at the first newline, compared verbatim with the answer)."""

from __future__ import annotations

from typing import Sequence

import torch

STOP = "\n"


@torch.no_grad()
def greedy_decode(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 16,
                  batch_size: int = 500) -> list[str]:
    """Greedy continuations of ``prompts``, each cut before the first newline."""
    stop_id = tokenizer.convert_tokens_to_ids(STOP)
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in chunk]
            width = max(len(e) for e in encoded)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, e in enumerate(encoded):  # left padding: every prompt ends at the same column
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            ids, mask = ids.to(device), mask.to(device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
            new = out.logits[:, -1].argmax(-1)
            steps = [new]
            done = new == stop_id
            for _ in range(max_new_tokens - 1):
                if bool(done.all()):
                    break
                mask = torch.cat([mask, mask.new_ones((len(chunk), 1))], dim=1)
                pos = pos[:, -1:] + 1
                out = model(input_ids=new[:, None], attention_mask=mask, position_ids=pos,
                            past_key_values=out.past_key_values, use_cache=True)
                new = out.logits[:, -1].argmax(-1)
                steps.append(new)
                done |= new == stop_id
            gen = torch.stack(steps, dim=1).tolist()
            for row in gen:
                if stop_id in row:
                    row = row[: row.index(stop_id)]
                outputs.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return outputs


def exact_match(model, tokenizer, items: Sequence[dict], max_new_tokens: int = 16,
                batch_size: int = 500) -> list[bool]:
    """Per-item correctness of greedy answers for items with ``prompt`` and ``answer`` keys."""
    answers = greedy_decode(model, tokenizer, [it["prompt"] for it in items], max_new_tokens, batch_size)
    return [a == it["answer"] for a, it in zip(answers, items)]
