#!/usr/bin/env python3
"""The peer baseline: Hugging Face transformers `generate` on the same weights and shapes.

usage: hf_peer_bench.py MODEL_DIR --batch 1,8,32,128 --input-len 128 --output-len 128
                        [--runs 3] [--mode eager|compile] [--copy]
       hf_peer_bench.py --random-init CONFIG_DIR --num-layers 32 ...

bf16, sdpa attention, greedy, exactly --output-len new tokens (EOS ignored via
min_new_tokens). Random prompt ids from a fixed seed. Times the whole generate call
(CUDA-synchronized) and a prefill-only call (max_new_tokens=1) for TTFT; median of runs
after one warm-up (two in compile mode: compilation, then CUDA-graph recording).

--mode eager is plain `generate` (dynamic cache). --mode compile is the strongest
single-GPU PyTorch baseline at small batch: a static KV cache and the forward compiled
with torch.compile(mode="reduce-overhead", fullgraph=True), which also replays it as
CUDA graphs. --random-init builds the model from CONFIG_DIR/config.json with random
weights on the GPU (speed does not depend on the values) when the exported weights are
not at hand. --copy first prints PyTorch's device-to-device copy bandwidth (bytes read
plus written per second over a 4 GiB buffer). Prints one JSON object per measurement.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def copy_bandwidth():
    n = 1 << 31  # bf16 elements: 4 GiB
    src = torch.empty(n, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    t = statistics.median(timed(lambda: dst.copy_(src)) for _ in range(10))
    del src, dst
    torch.cuda.empty_cache()
    return {"peer": "torch-copy", "bytes_per_s": 2 * n * 2 / t, "buffer_bytes": n * 2}


def load(a):
    if a.random_init:
        cfg = AutoConfig.from_pretrained(a.random_init)
        if a.num_layers:
            cfg.num_hidden_layers = a.num_layers
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(
                cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa"
            )
        return model.eval()
    return AutoModelForCausalLM.from_pretrained(
        a.model_dir, torch_dtype=torch.bfloat16, attn_implementation="sdpa"
    ).cuda().eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--random-init", metavar="CONFIG_DIR")
    ap.add_argument("--num-layers", type=int)
    ap.add_argument("--batch", default="1,8,32,128")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--copy", action="store_true")
    a = ap.parse_args()
    if not (a.model_dir or a.random_init):
        ap.error("MODEL_DIR or --random-init CONFIG_DIR is required")
    if a.copy:
        print(json.dumps(copy_bandwidth()), flush=True)
    model = load(a)
    warmups = 1
    if a.mode == "compile":
        model.generation_config.cache_implementation = "static"
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
        warmups = 2
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

        try:
            t0 = time.perf_counter()
            for _ in range(warmups):
                gen()
            warm_s = time.perf_counter() - t0
            e2e = statistics.median(timed(gen) for _ in range(a.runs))
            prefill()
            ttft = statistics.median(timed(prefill) for _ in range(a.runs))
        except Exception as e:  # one failed batch size must not hide the others
            print(json.dumps({"peer": f"transformers-{a.mode}", "batch": b, "error": repr(e)[:400]}),
                  flush=True)
            continue
        tpot = (e2e - ttft) / max(a.output_len - 1, 1)
        print(json.dumps({"peer": f"transformers-{a.mode}", "batch": b, "input_len": a.input_len,
                          "output_len": a.output_len, "e2e_s": e2e, "ttft_s": ttft, "tpot_s": tpot,
                          "warmup_s": warm_s, "random_init": bool(a.random_init),
                          "output_tok_per_s": b * a.output_len / e2e}), flush=True)


if __name__ == "__main__":
    main()
