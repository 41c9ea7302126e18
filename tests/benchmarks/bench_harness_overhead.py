"""The hf backend's decode loop against a plain `model.generate` on the same model and batch (target: >= 0.9x).

    .venv/bin/python tests/benchmarks/bench_harness_overhead.py                      # ~34M-parameter Llama, CPU
    .venv/bin/python tests/benchmarks/bench_harness_overhead.py --batch 32 --isl 512 --osl 128 --device cuda

The harness side is `bench.hf.Runner.measure` exactly as a sweep runs it (static batches, the per-token clock,
inference mode), and its throughput is the one it reports; the plain side is
`model.generate(ids, max_new_tokens=OSL, min_new_tokens=OSL, do_sample=False)` under `torch.inference_mode()`,
timed around the call. Both run the same requests, alternating, best of --repeats each, after one warm-up each.
"""

import argparse
import tempfile
import time

import torch
from minitron.bench.hf import Runner
from minitron.bench.target import resolve
from minitron.core.model_io import save_checkpoint
from transformers import AutoConfig, AutoModelForCausalLM


def build(folder, layers: int, hidden: int, vocab: int):
    config = AutoConfig.for_model("llama", hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                                  num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                                  vocab_size=vocab, max_position_embeddings=2048, bos_token_id=0, eos_token_id=1,
                                  pad_token_id=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    save_checkpoint(model, None, folder)
    return sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--isl", type=int, default=128)
    parser.add_argument("--osl", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measure(folder, args)


def measure(folder, args):
    params = build(folder, args.layers, args.hidden, args.vocab)
    runner = Runner(resolve("hf", folder), batch_size=args.batch, repeats=1, warmup=0, device=args.device)
    model, device = runner.model, runner.device
    requests = torch.randint(3, args.vocab, (args.batch, args.isl), generator=torch.Generator().manual_seed(0))
    ids = requests.to(device)

    def plain() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.osl,
                                 min_new_tokens=args.osl, do_sample=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert out.shape[1] == args.isl + args.osl
        return args.batch * args.osl / (time.perf_counter() - start)

    def harness() -> float:
        [repeat] = runner.measure(args.isl, args.osl, requests.tolist())
        assert repeat.actual_osl == args.osl
        return repeat.output_tokens_per_s

    plain(), harness()  # warm-up
    plain_best = harness_best = 0.0
    for _ in range(args.repeats):
        plain_best = max(plain_best, plain())
        harness_best = max(harness_best, harness())
    print(f"model: Llama, {params / 1e6:.1f}M parameters, fp32, {device}; batch {args.batch}, "
          f"ISL/OSL {args.isl}/{args.osl}; best of {args.repeats}")
    print(f"plain model.generate   {plain_best:9.1f} output tokens/s")
    print(f"hf backend (harness)   {harness_best:9.1f} output tokens/s")
    print(f"harness / plain = {harness_best / plain_best:.3f}x  (target >= 0.9x)")


if __name__ == "__main__":
    main()
