"""A tiny in-process model for fast tests: a 2-layer Llama on a byte-level tokenizer with a ChatML template.

Random weights (seeded), so its answers are noise, but every code path that a real model takes (chat template,
padding, KV cache, generate, peft, Trainer-free training loops, save/load) runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from persist.folders import published_folder

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% if not loop.last or message['role'] != 'assistant' or not continue_final_message|default(false) %}"
    "<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer() -> Any:
    """Byte-level BPE with no merges: 256 byte tokens + 3 specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>", chat_template=CHATML)


def tiny_model(seed: int = 0, layers: int = 2, hidden: int = 64) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval()


def tiny_model_folder(folder: Path, seed: int = 0) -> Path:
    """Write the tiny model + tokenizer as a normal HF folder (once), so it resolves like any user folder."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    from persist.bundled import quiet_transformers

    quiet_transformers()
    with published_folder(folder, ".tiny-") as tmp:  # another process may win the race: theirs is identical
        tiny_model(seed).save_pretrained(tmp)
        tiny_tokenizer().save_pretrained(tmp)
    return folder
