"""Time the text-embedding cache (``train.text_embedding_cache``) against re-encoding every step.

A T5 encoder built locally (no download; a word-level tokenizer, DeepFloyd IF's 77-token prompts),
batches of captions as a video stage sees them (10 % replaced by "" for caption dropout), first the
encoder's forward, then the cache's read-back of the same batches. Prints the times and the speed-up.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_text_cache.py [--d-model 512 --layers 8 --batch 8]
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch
from transformers import BertTokenizer, T5Config, T5EncoderModel

from lumiere.models.text_encoder import TextEncoder
from lumiere.train.text_cache import CachedTextEncoder

WORDS = ("a red blue green yellow white circle square triangle moving left right up down bouncing rotating "
         "over the sea grass sky night two three slowly quickly camera pans across aerial view of").split()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
        with open(f"{tmp}/vocab.txt", "w") as f:
            f.write("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer(f"{tmp}/vocab.txt", model_max_length=77)
        config = T5Config(vocab_size=len(vocab), d_model=args.d_model, d_kv=64, d_ff=4 * args.d_model,
                          num_layers=args.layers, num_heads=args.d_model // 64, dropout_rate=0.0)
        encoder = TextEncoder(tokenizer, T5EncoderModel(config).eval(), max_length=77).requires_grad_(False)
        rng = random.Random(0)
        batches = [["" if rng.random() < 0.1 else " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
                    for _ in range(args.batch)] for _ in range(args.steps)]
        cached = CachedTextEncoder(encoder, f"{tmp}/cache")
        params = sum(p.numel() for p in encoder.parameters())
        with torch.no_grad():
            encoder(["warm up the kernels"] * args.batch)  # not timed: the first call allocates
        timings = {}
        for name, run in (("encode", encoder), ("first pass (encode + write)", cached), ("cached", cached)):
            start = time.perf_counter()
            with torch.no_grad():
                for batch in batches:
                    run(batch)
            timings[name] = (time.perf_counter() - start) / len(batches)
        print(f"T5 encoder {params / 1e6:.1f} M parameters, d_model {args.d_model}, {args.layers} layers, "
              f"77 tokens, batch {args.batch}, {torch.get_num_threads()} thread(s)")
        for name, seconds in timings.items():
            print(f"  {name:28s} {1000 * seconds:8.2f} ms / batch")
        print(f"  speed-up (encode / cached): {timings['encode'] / timings['cached']:.1f}x")


if __name__ == "__main__":
    main()
