"""The transformers engine: a live ``AutoModelForCausalLM`` written in place, scored through lm-eval's HFLM."""

from __future__ import annotations

from evomerge.engines.base import ENGINES, Engine


@ENGINES.register("hf")
class HFEngine(Engine):
    serves_dataflow = True

    def __init__(self, lead: str, tokenizer_dir: str, dtype, device, cfg):
        import torch
        from transformers import AutoModelForCausalLM

        spread = device.type == "cuda" and cfg.device == "auto" and torch.cuda.device_count() > 1
        # several GPUs given to this worker: one candidate over all of them (layers placed by accelerate)
        self.model = AutoModelForCausalLM.from_pretrained(
            lead, dtype=dtype, device_map="auto" if spread else str(device)).eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())  # follows the recipe's vocabulary rows
