"""Build the bundled CLIP BPE tokenizer files (vocab.json, merges.txt) from OpenAI's BPE list.

Run once by a developer; the outputs ship in ``src/sdlab/data/clip_bpe/``. The input is the MIT-licensed
``bpe_simple_vocab_16e6.txt.gz`` that OpenAI published with CLIP (the open_clip_torch wheel carries a copy):

    pip download --no-deps -d /tmp/oc open-clip-torch==3.3.0
    unzip -p /tmp/oc/open_clip_torch-*.whl open_clip/bpe_simple_vocab_16e6.txt.gz > /tmp/bpe.txt.gz
    python tools/build_clip_vocab.py /tmp/bpe.txt.gz src/sdlab/data/clip_bpe

The vocabulary order follows CLIP's definition: the 256 byte symbols, the same with ``</w>``, one entry per
merge (the first 48,894 merges), then ``<|startoftext|>`` and ``<|endoftext|>``: 49,408 tokens.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

N_MERGES = 49152 - 256 - 2


def byte_symbols() -> list[str]:
    """CLIP/GPT-2's reversible byte -> printable unicode table, in byte-value order of the table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def build(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def main(argv: list[str]) -> int:
    src, out = Path(argv[1]), Path(argv[2])
    vocab, merges = build(src)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
