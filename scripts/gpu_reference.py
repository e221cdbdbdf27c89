#!/usr/bin/env python3
"""Compare `engine logits` dumps with Hugging Face transformers on the same weights.

usage: gpu_reference.py MODEL_DIR OURS.json [OTHER.json ...]

MODEL_DIR holds config.json + model.safetensors (from `engine export-dummy`). Each
OURS.json / .f32 pair is a dump of `engine logits`: the prompt, the greedy tokens, and
one row of logits per position (last prompt position, then each fed-back token). The
reference runs transformers' AutoModelForCausalLM (bf16, sdpa) on the GPU over the same
token sequence. Prints, per dump, the relative error ||ours - ref|| / ||ref|| per row
(max and median), greedy agreement, and the top-1 margin where they disagree.
"""
import json
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def load_dump(path):
    meta = json.load(open(path))
    rows = np.fromfile(path[: -len(".json")] + ".f32", dtype=np.float32).reshape(meta["shape"])
    return meta, rows


def reference_logits(model_dir, prompt, generated):
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, torch_dtype=torch.bfloat16, attn_implementation="sdpa"
    ).cuda().eval()
    ids = torch.tensor([prompt + generated[:-1]], device="cuda")
    with torch.no_grad():
        logits = model(ids).logits[0].float().cpu().numpy()
    del model
    torch.cuda.empty_cache()
    return logits[len(prompt) - 1 :]


def compare(name, ours, ref, generated):
    rel = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    ref_top = ref.argmax(axis=1)
    agree = int((ref_top == np.array(generated)).sum())
    print(f"{name}: rows {len(rel)}  rel err max {rel.max():.3e} median {np.median(rel):.3e}  "
          f"greedy agreement {agree}/{len(generated)}")
    for i in np.nonzero(ref_top != np.array(generated))[0][:3]:
        top2 = np.sort(ref[i])[-2:]
        print(f"   row {i}: ours {generated[i]} ref {ref_top[i]} ref top-2 margin {top2[1]-top2[0]:.4f}")
    return rel.max()


def main():
    model_dir, dumps = sys.argv[1], sys.argv[2:]
    metas = [load_dump(p) for p in dumps]
    first_meta, first_rows = metas[0]
    ref = reference_logits(model_dir, first_meta["prompt"], first_meta["generated"])
    for path, (meta, rows) in zip(dumps, metas):
        if meta["prompt"] != first_meta["prompt"] or meta["generated"] != first_meta["generated"]:
            print(f"{path}: greedy tokens differ from {dumps[0]}: {meta['generated']} vs {first_meta['generated']}")
        compare(f"{path} ({meta['device']}, {meta['dtype']}) vs transformers bf16", rows, ref, meta["generated"])
    for path, (meta, rows) in zip(dumps[1:], metas[1:]):
        rel = np.linalg.norm(rows - first_rows, axis=1) / np.linalg.norm(first_rows, axis=1)
        print(f"{path} vs {dumps[0]}: rel err max {rel.max():.3e} median {np.median(rel):.3e}")


if __name__ == "__main__":
    main()
