"""Decode speed and peak memory of a Mistral-7B-shaped model per preset, next to the memory-bandwidth limit.

Batch-1 decoding reads every weight once per token, so tokens/s can never exceed
bandwidth / bytes read per token (weights without the embedding table, plus the KV cache). The model is random:
built on the meta device and materialized straight on the GPU (quantized presets quantize each linear layer as it
is created, like `from_pretrained` does), so nothing touches the disk or the Hub.

    python benchmarks/gpu_presets.py [--presets bf16,fp16,fa2,sdpa,4bit,8bit] [--layers 32] [--prompt 512] [--new 128]

Needs a CUDA GPU; exits with a message otherwise. Presets the GPU cannot run (bf16 on a T4, fa2 without
flash-attn) are listed with the reason instead of a number.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from hf_mistral_kit import Hardware, PresetError, resolve_preset

GB = 1e9


def measure_bandwidth(size_bytes: int = 2**30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (each copy reads and writes `size_bytes`)."""
    src = torch.empty(size_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del src, dst
    torch.cuda.empty_cache()
    return 2 * size_bytes * repeats / seconds


def build_model(config, resolved, device: str = "cuda"):
    """A random model with the preset's dtype, attention and quantization, materialized on `device`."""
    from transformers import AutoModelForCausalLM

    dtype = resolved.dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=resolved.attn_implementation)
    quantization = resolved.kwargs.get("quantization_config")
    if quantization is not None:
        import bitsandbytes as bnb
        from transformers.integrations.bitsandbytes import replace_with_bnb_linear

        model = replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quantization)
        for module in model.modules():
            if not isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
                continue
            weight = torch.randn(module.out_features, module.in_features, dtype=dtype, device=device)
            weight *= config.initializer_range
            settings = {key: value for key, value in module.weight.__dict__.items() if key != "SCB"}
            # As transformers' loader does: the parameter classes quantize when moved to the device.
            if isinstance(module, bnb.nn.Linear4bit):
                module.weight = bnb.nn.Params4bit(weight, requires_grad=False, **settings).to(device)
            else:
                module.weight = bnb.nn.Int8Params(weight.cpu(), requires_grad=False, **settings).to(device)
    # What is still on meta: everything unquantized (embeddings, norms, lm_head, or the whole model).
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.device.type == "meta":
                value = torch.empty(param.shape, dtype=param.dtype, device=device)
                value.normal_(0, config.initializer_range) if value.dim() > 1 else value.fill_(1.0)
                setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    with torch.device(device):  # rotary frequencies are computed, not random
        model.model.rotary_emb = type(model.model.rotary_emb)(model.config)
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left_on_meta:
        raise RuntimeError(f"not materialized: {left_on_meta}")
    model.generation_config.eos_token_id = None  # random weights: never stop early
    model.generation_config.pad_token_id = 0
    return model.eval()


def decode_tokens_per_second(model, prompt: int, new: int) -> float:
    """Batch-1 greedy decode rate, prefill excluded: (new - 1) tokens over the time beyond a 1-token generate."""
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), device="cuda")

    def timed(n: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    timed(4)  # warm-up: kernels, allocator
    return (new - 1) / (timed(new) - timed(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="bf16,fp16,fa2,sdpa,4bit,8bit")
    parser.add_argument("--layers", type=int, default=32, help="decoder layers (32 = Mistral-7B)")
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    parser.add_argument("--new", type=int, default=128, help="generated tokens")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_presets.py measures GPU decode speed and needs a CUDA GPU; none is available here.", file=sys.stderr)
        return 2

    from transformers import MistralConfig

    config = MistralConfig(num_hidden_layers=args.layers)  # MistralConfig's defaults are Mistral-7B's shape
    hardware = Hardware.detect()
    measured = measure_bandwidth()
    spec = hardware.memory_bandwidth
    print(
        f"{hardware.describe()}; copy bandwidth {measured / GB:.0f} GB/s" + (f" (spec {spec / GB:.0f})" if spec else "")
    )
    print(f"Mistral-7B shape, {args.layers} layers, prompt {args.prompt} tokens, {args.new} new tokens, batch 1\n")
    columns = [("preset", 8), ("weights", 8), ("attention", 17), ("planned", 8), ("peak", 8), ("tok/s", 7)]
    columns += [("limit", 7), ("of limit", 8)]
    header = " ".join(f"{title:>{width}}" for title, width in columns)
    print(header)
    print("-" * len(header))
    for name in args.presets.split(","):
        try:
            resolved = resolve_preset(name, hardware, model=config, context_length=args.prompt + args.new)
        except (PresetError, ImportError) as error:
            print(f"{name:>8} skipped: {error}")
            continue
        plan = resolved.plan
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = build_model(config, resolved)
        rate = decode_tokens_per_second(model, args.prompt, args.new)
        peak = torch.cuda.max_memory_allocated()
        embedding = config.vocab_size * config.hidden_size * resolved.dtype.itemsize  # one row read per token
        kv_read = (args.prompt + args.new / 2) * plan.kv_cache_bytes / (args.prompt + args.new)
        limit = measured / (plan.weights_bytes - embedding + kv_read)
        weights = resolved.quantization or str(resolved.dtype).removeprefix("torch.")
        print(
            f"{name:>8} {weights:>8} {resolved.attn_implementation:>17} {plan.device_bytes / GB:7.2f}G "
            f"{peak / GB:7.2f}G {rate:7.1f} {limit:7.1f} {rate / limit:8.0%}"
        )
        del model
    print("\nlimit = copy bandwidth / bytes read per decoded token (weights without embeddings + average KV cache).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
