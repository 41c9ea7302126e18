"""Cost of importance estimation against a plain no-grad forward over the same batches (issue target: <= 1.15x).

    .venv/bin/python tests/benchmarks/importance_cost.py [--hidden 1024 --layers 4 --batches 8]

A Llama-shaped model (GQA, SwiGLU) on the CPU; each measurement is the best of --repeats runs, all in
this one process, so the printed ratios compare like with like.
"""

import argparse

import torch
from common import best_time, llama_config
from minitron.compress.importance import estimate_importance
from transformers import LlamaForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = llama_config(args.hidden, args.layers, args.vocab, positions=args.seq_len)
    model = LlamaForCausalLM(cfg).eval()
    batches = [torch.randint(0, args.vocab, (args.batch_size, args.seq_len)) for _ in range(args.batches)]

    @torch.no_grad()
    def plain_forward():
        for ids in batches:
            model(input_ids=ids, use_cache=False)

    @torch.no_grad()
    def decoder_forward():
        for ids in batches:
            model.model(input_ids=ids, use_cache=False)

    t_plain = best_time(plain_forward, args.repeats)
    t_decoder = best_time(decoder_forward, args.repeats)
    t_importance = best_time(lambda: estimate_importance(model, batches), args.repeats)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model {params:.0f}M params, {args.batches} batches of {args.batch_size}x{args.seq_len} tokens, "
          f"{torch.get_num_threads()} threads")
    print(f"plain forward (causal LM, no grad) {t_plain:7.3f} s")
    print(f"decoder-only forward (no lm_head)  {t_decoder:7.3f} s")
    print(f"importance estimation              {t_importance:7.3f} s")
    print(f"importance / plain forward   = {t_importance / t_plain:.3f}x  (target <= 1.15x)")
    print(f"importance / decoder forward = {t_importance / t_decoder:.3f}x  (hook overhead alone)")


if __name__ == "__main__":
    main()
