"""Tiny models and a tiny tokenizer, built inside the tests (the model hub is unreachable).

``make_tiny_model(arch, out_dir)`` writes a standard HF model directory (config.json, safetensors,
tokenizer with a ChatML chat template, snrtune_source.json) for one of ARCHITECTURES.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from snrtune.model_dir import write_source_info

ARCHITECTURES = ("llama", "mistral", "qwen2", "phi3", "gpt2", "mixtral")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Call the tool with a JSON object: {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}",
    "user assistant system answer question instruction input output",
    "0 1 2 3 4 5 6 7 8 9 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?'\"()[]{}-_/",
]
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]


def make_tokenizer(vocab_size: int = 320) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with ChatML special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML
    return fast


def tiny_config(arch: str, vocab_size: int, **overrides) -> transformers.PretrainedConfig:
    """A config of the given architecture with tiny sizes (hidden 32-64, 2-4 layers)."""
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=3, eos_token_id=2)
    if arch == "llama":
        cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=256, tie_word_embeddings=True, **common)
    elif arch == "mistral":
        cfg = transformers.MistralConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, tie_word_embeddings=False, **common)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=256, tie_word_embeddings=True, **common)
    elif arch == "phi3":
        cfg = transformers.Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=256, original_max_position_embeddings=256,
                                      tie_word_embeddings=False, **common)
    elif arch == "gpt2":
        cfg = transformers.GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=256, vocab_size=vocab_size,
                                      bos_token_id=3, eos_token_id=2, pad_token_id=0)
    elif arch == "mixtral":
        cfg = transformers.MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                         num_experts_per_tok=2, max_position_embeddings=256,
                                         tie_word_embeddings=False, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {ARCHITECTURES}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_tiny_model(arch: str, out_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Build, save and return a tiny model directory of architecture ``arch``."""
    out_dir = Path(out_dir)
    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(arch, vocab_size=len(tokenizer), **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_source_info(out_dir, name=f"tiny-{arch}", source=f"tests.tiny:{arch}", kind="local", revision=None)
    return out_dir
