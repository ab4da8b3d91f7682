"""Improving and measuring the SEER model: `finetune` trains the LoRA adapter on rewarded traces (export-traces'
rows); `evaluate` measures Dice across request wordings, SEER against the raw request. May import everything
below it, and `seer.pipeline`.
"""
