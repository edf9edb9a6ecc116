"""Text encoding cost: text-encoder passes and time for prompts of 75, 150 and 300 tokens.

Builds a full-size CLIP ViT-L/14 text encoder with random weights from the bundled SD1 config (nothing
downloaded), counts its forward passes with a hook, and times sdlab's TextConditioner (A1111 chunking,
emphasis, one pass per chunk index for the whole batch). Usage:

    .venv/bin/python benchmarks/bench_text_encoding.py
"""

from __future__ import annotations

import time

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from sdlab.models.derive import load_template
from sdlab.prompt.encode import EncodeOptions, TextConditioner
from sdlab.prompt.tokenizer import ClipTokenizer

WORDS = "castle hill night sky stars river forest mist lantern bridge".split()


def prompt_of(tokens: int) -> str:
    """A prompt of about ``tokens`` CLIP tokens (one token per common word), with weights."""
    words = [WORDS[i % len(WORDS)] for i in range(tokens - 2)]
    return "(" + " ".join(words[:10]) + ":1.2), " + " ".join(words[10:])


def main() -> None:
    config = {k: v for k, v in load_template("sd1", "text_encoder").items() if not k.startswith("_")}
    model = CLIPTextModel(CLIPTextConfig(**config)).eval()
    with torch.no_grad():  # default init gives LayerNorm outputs of mean exactly 0; real weights never do
        model.final_layer_norm.bias.normal_(0.0, 0.1)
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(1))
    conditioner = TextConditioner("sd1", [ClipTokenizer.bundled("clip")], [model])
    print(f"{'tokens':>7}{'chunks':>7}{'texts':>6}{'encoder passes':>16}{'seconds':>9}")
    for tokens in (75, 150, 300):
        for batch in (1, 4):
            text = prompt_of(tokens)
            texts = [text + f" {i}" for i in range(batch)]
            calls.clear()
            start = time.perf_counter()
            out = conditioner.encode(texts, EncodeOptions())
            seconds = time.perf_counter() - start
            chunks = out.cond.shape[1] // 77
            print(f"{tokens:>7}{chunks:>7}{batch:>6}{len(calls):>16}{seconds:>9.3f}")


if __name__ == "__main__":
    main()
