#!/usr/bin/env python3
"""The peer baseline: Hugging Face transformers `generate` on the same weights and shapes.

usage: hf_peer_bench.py MODEL_DIR --batch 1,8,32,128 --input-len 128 --output-len 128 [--runs 3]

bf16, sdpa attention, greedy, exactly --output-len new tokens (EOS ignored via
min_new_tokens). Random prompt ids from a fixed seed. Times the whole generate call
(CUDA-synchronized) and a prefill-only call (max_new_tokens=1) for TTFT; median of runs
after one warm-up. Prints one JSON object per batch size.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--batch", default="1,8,32,128")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(
        a.model_dir, torch_dtype=torch.bfloat16, attn_implementation="sdpa"
    ).cuda().eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    for b in [int(x) for x in a.batch.split(",")]:
        ids = torch.randint(100, min(vocab, 32000), (b, a.input_len), generator=g).cuda()
        mask = torch.ones_like(ids)
        kw = dict(attention_mask=mask, do_sample=False, pad_token_id=0)

        def gen():
            with torch.no_grad():
                model.generate(ids, max_new_tokens=a.output_len, min_new_tokens=a.output_len, **kw)

        def prefill():
            with torch.no_grad():
                model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)

        gen()
        e2e = statistics.median(timed(gen) for _ in range(a.runs))
        ttft = statistics.median(timed(prefill) for _ in range(a.runs))
        tpot = (e2e - ttft) / max(a.output_len - 1, 1)
        print(json.dumps({"peer": "transformers", "batch": b, "input_len": a.input_len,
                          "output_len": a.output_len, "e2e_s": e2e, "ttft_s": ttft, "tpot_s": tpot,
                          "output_tok_per_s": b * a.output_len / e2e}), flush=True)


if __name__ == "__main__":
    main()
