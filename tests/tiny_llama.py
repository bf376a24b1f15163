"""Tiny random Llama checkpoints for the merge tests (sharded on purpose), used where the zoo does not fit;
the ``tiny_models`` fixture (conftest.py) builds four of them."""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_llama(out: Path, seed: int, base_state: dict | None = None, noise: float = 0.02,
                    layers: int = 4, hidden: int = 32, shard: str = "20KB") -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if base_state is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(base_state[name] + noise * torch.randn(p.shape, generator=g))
    model.save_pretrained(out, max_shard_size=shard)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
