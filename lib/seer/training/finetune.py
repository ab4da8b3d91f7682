"""Fine-tune the SEER LoRA adapter on a team's rewarded traces (`python main.py finetune`).

Rows in (JSONL, or a folder holding `seer_traces.jsonl`):
  - what `export-traces` writes: slices (the 8 PNGs), raw_prompt, trace, dice, corrected_to, label_name, skills;
  - a hand-written row: {"image": VOLUME, "raw_prompt": TEXT, "trace": "<evidence>..</evidence><rationale>..
    </rationale><answer>..</answer>", "dice": FLOAT}, optional "labels" (a label-map JSON whose names the answer
    must resolve to) and "skills" ([{tag, content, audit}], shown to the model as at inference).
  Relative paths are read against the rows file's folder.

A row teaches when its Dice >= `min_reward`, or when the annotator corrected the proposal to another structure
(`corrected_to`): then the answer is rewritten to that structure (the correction is the lesson).

Each example is exactly the inference input of the contract: `seer.reasoning.prompts.build_messages` over the study's 8
views and the request after hygiene (`clean_request`, as the server applies it), rendered by the processor's chat
template with the generation prompt (`qwen_vl.chat_prompt`, the text the server renders), then the trace and the
end-of-turn token. The loss covers the trace tokens only.

Training is transformers' `Trainer` over a peft LoRA (progress bar, checkpoints under ADAPTER_DIR/checkpoints,
resume). The adapter is written with `save_pretrained`, so it loads through the qwen-vl reasoner's
`PeftModel.from_pretrained` path. ADAPTER_DIR/finetune.json holds the settings, the losses and the held-out
format-valid rate and target accuracy before and after.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from seer.cache import BoundedCache
from seer.errors import BadRequest, SeerError
from seer.files import write_atomic
from seer.reasoning.hygiene import clean_request
from seer.reasoning.prompts import build_messages
from seer.reasoning.trace import has_valid_format, parse_output, render_output

logger = logging.getLogger(__name__)

# The language model's attention and MLP projections (what vLLM applies for Qwen-VL models); the vision tower is
# left alone. A start adapter (--adapter) keeps its own target modules.
LANGUAGE_MODEL_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
ROWS_FILE = "seer_traces.jsonl"
REPORT_FILE = "finetune.json"
CHECKPOINTS = "checkpoints"


@dataclass
class FinetuneSettings:
    traces: str  # rows JSONL, or a folder with seer_traces.jsonl (export-traces' output)
    model: str  # base model folder or hub id
    output: str  # adapter folder to write
    adapter: str | None = None  # start from this LoRA adapter (its target modules, r and alpha are kept)
    processor: str | None = None  # defaults to the base
    max_steps: int | None = None  # overrides epochs
    epochs: float = 3.0
    lr: float = 1e-4
    lora_r: int = 16
    lora_alpha: int | None = None  # default 2 x r
    lora_dropout: float = 0.05
    batch_size: int = 1
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto: bf16 on GPU, float32 on CPU
    min_reward: float = 0.5
    eval_fraction: float = 0.1
    resume: bool = False
    overwrite: bool = False
    save_steps: int = 50
    seed: int = 0
    max_new_tokens: int = 256  # when generating the held-out answers
    gradient_checkpointing: bool = False
    progress: bool = True

    def check(self) -> None:
        """Raise BadRequest with one sentence for a setting out of range."""
        if self.max_steps is not None and self.max_steps < 1:
            raise BadRequest("--max-steps must be at least 1.")
        if not self.epochs > 0:
            raise BadRequest("--epochs must be greater than 0.")
        if not self.lr > 0:
            raise BadRequest("--lr must be greater than 0.")
        if self.lora_r < 1:
            raise BadRequest("--lora-r must be at least 1.")
        if self.batch_size < 1:
            raise BadRequest("--batch-size must be at least 1.")
        if not 0.0 <= self.min_reward <= 1.0:
            raise BadRequest("--min-reward is a Dice between 0 and 1.")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise BadRequest("--eval-fraction must be at least 0 and below 1.")
        if self.save_steps < 1:
            raise BadRequest("--save-steps must be at least 1.")
        if self.resume and self.overwrite:
            raise BadRequest("Choose one of --resume (continue the training in the output folder) and --overwrite "
                             "(replace it).")


@dataclass(frozen=True)
class PromptSkill:
    """A skill as the model reads it in the <skill_bank> block."""

    tag: str
    content: str
    audit: str = ""


def _views_size(images: list) -> int:
    return sum(i.width * i.height * len(i.getbands()) for i in images)


# the 8 views of the studies being trained on, loaded on use: a team's thousands of studies never sit in memory
VIEW_CACHE = BoundedCache("finetune views", max_bytes=512 * 2**20, sizeof=_views_size)


@dataclass
class Example:
    """One training example. images: the 8 views (PIL RGB, 448 x 448), loaded through VIEW_CACHE by `view_key`
    with `load_views`; completion: the target text (a SEER trace); expected: the label name the answer must resolve
    to (None when the row does not say); labels: the label map of the row (id -> name), for target accuracy."""

    source: str
    view_key: str
    load_views: Callable[[], list] = field(repr=False, compare=False)
    raw_prompt: str = ""
    completion: str = ""
    answer: str = ""
    skills: list[PromptSkill] = field(default_factory=list)
    expected: str | None = None
    labels: dict | None = None
    corrected: bool = False

    @property
    def images(self) -> list:
        return VIEW_CACHE.get_or_make(self.view_key, self.load_views)

    def messages(self) -> list[dict]:
        return build_messages(self.images, self.raw_prompt, self.skills)


# -- reading rows ----------------------------------------------------------------------------------------------
def rows_path(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / ROWS_FILE
        if not path.is_file():
            raise BadRequest(f"The folder {source} holds no {ROWS_FILE}; give the folder export-traces wrote, or a "
                             "JSONL file of trace rows.")
    elif not path.is_file():
        raise BadRequest(f"The traces '{source}' do not exist; give a JSONL file or the folder export-traces wrote.")
    return path


def read_examples(source: str | os.PathLike, min_reward: float) -> tuple[list[Example], dict]:
    """Rows -> (examples, report). report: {"path", "read", "used", "corrected", "skipped": {reason: count},
    "skipped_rows": [{"row", "reason"}] (the first 50)}. Raises BadRequest when no row qualifies."""
    path = rows_path(source)
    folder = path.parent
    examples: list[Example] = []
    skipped: Counter = Counter()
    skipped_rows: list[dict] = []
    read = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        read += 1
        where = f"{path.name}:{number}"
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            example = _example(row, where, folder, min_reward)
        except ValueError as exc:
            example, reason = None, f"not a JSON object ({str(exc)[:60]})"
        except _Skip as skip:
            example, reason = None, skip.reason
        if example is None:
            skipped[reason] += 1
            if len(skipped_rows) < 50:
                skipped_rows.append({"row": where, "reason": reason})
            continue
        examples.append(example)
    report = {"path": str(path), "read": read, "used": len(examples),
              "corrected": sum(e.corrected for e in examples), "skipped": dict(skipped),
              "skipped_rows": skipped_rows}
    if not examples:
        why = "; ".join(f"{n} {reason}" for reason, n in skipped.most_common()) or "the file has no rows"
        raise BadRequest(f"No training examples: read {read} rows from {path}, and none qualified ({why}). Save "
                         f"final labels for proposals (or lower --min-reward, now {min_reward:g}), then try again.")
    return examples, report


class _Skip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _example(row: dict, where: str, folder: Path, min_reward: float) -> Example:
    raw_prompt = str(row.get("raw_prompt") or "").strip()
    text = str(row.get("trace") or "").strip()
    if not raw_prompt or not text:
        raise _Skip("rows lack raw_prompt or trace")
    try:  # the model reads the request after hygiene, as the server sends it
        raw_prompt = clean_request(raw_prompt).text
    except SeerError:
        raise _Skip("rows' requests are empty or too long once markup is set aside") from None
    try:
        dice = float(row["dice"])
    except (KeyError, TypeError, ValueError):
        raise _Skip("rows have no numeric dice") from None
    corrected_to = str(row.get("corrected_to") or "").strip()
    if not corrected_to and dice < min_reward:
        raise _Skip(f"rows have a dice below --min-reward {min_reward:g}")
    trace = parse_output(text, raw_prompt)
    if corrected_to:  # the annotator's saved label holds another structure: that structure is the answer
        rationale = f"The request refers to the {corrected_to}; the answer names it."
        completion = render_output(trace.evidence, rationale, corrected_to)
        answer = corrected_to
    else:
        if not has_valid_format(text):
            raise _Skip("traces are not in the SEER format (<evidence>, <rationale>, <answer>)")
        completion = render_output(trace.evidence, trace.rationale, trace.answer)
        answer = trace.answer
    labels = _labels(row.get("labels"), folder)
    expected = corrected_to or (str(row["label_name"]) if row.get("label_name") else None)
    if labels is not None:
        from seer.reasoning.targets import LabelTable, Resolver

        resolution = Resolver(LabelTable(labels)).resolve(answer)
        if not resolution.ok:
            raise _Skip("answers do not resolve to a name of their label map")
        expected = resolution.entry.name
    view_key, load_views = _views(row, folder)
    skills = [PromptSkill(str(s.get("tag") or ""), str(s.get("content") or ""), str(s.get("audit") or ""))
              for s in row.get("skills") or [] if isinstance(s, dict) and s.get("content")]
    return Example(source=where, view_key=view_key, load_views=load_views, raw_prompt=raw_prompt,
                   completion=completion, answer=answer,
                   skills=skills, expected=expected, labels=labels, corrected=bool(corrected_to))


def _labels(value, folder: Path) -> dict | None:
    if value is None or value == "":
        return None
    from seer.reasoning.targets import label_mapping

    if isinstance(value, dict):
        mapping = value
    else:
        path = Path(str(value))
        path = path if path.is_absolute() else folder / path
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise _Skip("rows name a label map that cannot be read") from None
    try:
        return {int(k): v for k, v in label_mapping(mapping).items()}
    except SeerError:
        raise _Skip("rows name a label map that is not {id: name}") from None


def _views(row: dict, folder: Path) -> tuple[str, Callable[[], list]]:
    """(key, loader) of the row's 8 contract views: its exported PNGs when all are there, else rendered from its
    volume (seer.imaging.views, as the server renders them). A volume is read once here, to check it."""
    slices = row.get("slices") or []
    paths = [p if p.is_absolute() else folder / p for p in (Path(str(s)) for s in slices)]
    if len(paths) == 8 and all(p.is_file() for p in paths):
        return "png:" + "|".join(str(p) for p in paths), lambda: _read_pngs(paths)
    image = str(row.get("image") or "")
    if not image:
        raise _Skip("rows have neither their 8 slices nor an image")
    image_path = Path(image) if Path(image).is_absolute() else folder / image
    if not image_path.exists():
        raise _Skip("rows' images are gone")
    key = f"volume:{image_path}"
    try:
        VIEW_CACHE.get_or_make(key, lambda: _render(image_path))
    except (SeerError, ValueError):
        raise _Skip("rows' images cannot be read as 3D volumes") from None
    return key, lambda: _render(image_path)


def _read_pngs(paths: list[Path]) -> list:
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as picture:
            images.append(picture.convert("RGB"))
    return images


def _render(image_path: Path) -> list:
    from seer.imaging.views import take_views
    from seer.imaging.volume import load_volume

    return take_views(load_volume(image_path).array).images()


def split_examples(examples: list[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): a seeded shuffle; at least one example each side when eval_fraction > 0 and there are
    two or more examples."""
    if eval_fraction <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * eval_fraction)))
    held = set(order[:n_eval])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


# -- tensors -----------------------------------------------------------------------------------------------------
class TraceDataset:
    """Examples -> model inputs: input_ids (L,), labels (L,) with -100 over the prompt, pixel_values
    (patches, C*T*P*P), image_grid_thw (8, 3). The prompt is what the server sends the model."""

    def __init__(self, examples: list[Example], processor):
        self.examples = examples
        self.processor = processor
        tokenizer = processor.tokenizer
        self.end_ids = tokenizer(tokenizer.eos_token, add_special_tokens=False)["input_ids"]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        import torch

        from seer.reasoning.reasoners.qwen_vl import chat_prompt

        example = self.examples[index]
        prompt = chat_prompt(self.processor, example.messages())
        inputs = self.processor(text=[prompt], images=example.images, return_tensors="pt")
        completion = self.processor.tokenizer(example.completion, add_special_tokens=False)["input_ids"]
        completion = torch.tensor(completion + self.end_ids, dtype=torch.long)
        prompt_ids = inputs["input_ids"][0]
        return {
            "input_ids": torch.cat([prompt_ids, completion]),
            "labels": torch.cat([torch.full_like(prompt_ids, -100), completion]),
            "pixel_values": inputs["pixel_values"],
            "image_grid_thw": inputs["image_grid_thw"],
        }


def collate(pad_id: int) -> Callable[[list[dict]], dict]:
    """Right-pad a batch; the images of all rows are concatenated, as the Qwen-VL processor lays them out."""

    def collate_batch(items: list[dict]) -> dict:
        import torch

        length = max(len(i["input_ids"]) for i in items)
        ids = torch.full((len(items), length), pad_id, dtype=torch.long)
        labels = torch.full((len(items), length), -100, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = item["input_ids"]
            labels[row, :n] = item["labels"]
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask,
                "pixel_values": torch.cat([i["pixel_values"] for i in items]),
                "image_grid_thw": torch.cat([i["image_grid_thw"] for i in items])}

    return collate_batch


# -- held-out evaluation -----------------------------------------------------------------------------------------
def evaluate_examples(model, processor, examples: list[Example], max_new_tokens: int, device) -> dict:
    """Greedy answers on `examples`: format_valid_rate (the contract's whole-text check) and target_accuracy (a
    format-valid answer that resolves to the expected label), with the generated text of the first few."""
    import torch

    from seer.reasoning.reasoners.qwen_vl import chat_prompt
    from seer.reasoning.targets import LabelTable, Resolver

    vocabulary = sorted({e.expected for e in examples if e.expected})
    default_table = LabelTable({i + 1: name for i, name in enumerate(vocabulary)}) if vocabulary else None
    valid = correct = judged = 0
    samples = []
    was_training = model.training
    model.eval()
    for example in examples:
        prompt = chat_prompt(processor, example.messages())
        inputs = processor(text=[prompt], images=example.images, return_tensors="pt").to(device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True)
        text = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        trace = parse_output(text, example.raw_prompt)
        valid += trace.format_valid
        ok = None
        table = LabelTable(example.labels) if example.labels else default_table
        if example.expected and table is not None:
            judged += 1
            resolution = Resolver(table).resolve(trace.answer) if trace.format_valid else None
            ok = bool(resolution and resolution.ok and resolution.entry.name == example.expected)
            correct += ok
        if len(samples) < 5:
            samples.append({"row": example.source, "raw_prompt": example.raw_prompt, "generated": text[:400],
                            "format_valid": trace.format_valid, "expected": example.expected, "correct": ok})
    if was_training:
        model.train()
    n = len(examples)
    return {"examples": n, "format_valid_rate": round(valid / n, 4) if n else None,
            "target_accuracy": round(correct / judged, 4) if judged else None, "judged": judged, "samples": samples}


# -- training ----------------------------------------------------------------------------------------------------
def prepare_output(settings: FinetuneSettings) -> Path:
    """Refuse an existing output folder unless --resume (it must hold a checkpoint) or --overwrite."""
    out = Path(settings.output)
    if out.exists() and not out.is_dir():
        raise BadRequest(f"The output '{out}' is a file; give a folder for the adapter.")
    exists = out.is_dir() and any(out.iterdir())
    if settings.resume:
        if _last_checkpoint(out) is None:
            raise BadRequest(f"Nothing to resume: '{out}' holds no checkpoint (start without --resume).")
    elif exists and not settings.overwrite:
        raise BadRequest(f"The output folder '{out}' exists; pass --resume to continue its training or --overwrite "
                         "to replace it.")
    elif exists:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _last_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint-N folder the Trainer wrote under `out`/checkpoints, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / CHECKPOINTS
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def load_for_training(settings: FinetuneSettings):
    """(peft model, processor, device, dtype, lora description). The base is frozen; only LoRA weights train."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from seer.reasoning.reasoners.qwen_vl import _select_device, _select_dtype

    device = _select_device(settings.device)
    dtype = _select_dtype(settings.dtype, device)
    try:
        base = Qwen3VLForConditionalGeneration.from_pretrained(settings.model, dtype=dtype)
        processor = AutoProcessor.from_pretrained(settings.processor or settings.model)
        if settings.adapter:
            model = PeftModel.from_pretrained(base, settings.adapter, is_trainable=True)
        else:
            config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha or 2 * settings.lora_r,
                                lora_dropout=settings.lora_dropout, target_modules=LANGUAGE_MODEL_MODULES,
                                task_type="CAUSAL_LM")
            model = get_peft_model(base, config)
    except (OSError, ValueError) as exc:
        raise SeerError(f"The model could not be loaded from '{settings.model}'"
                        f"{' + ' + settings.adapter if settings.adapter else ''}: "
                        f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}"
                        ) from None
    if settings.gradient_checkpointing:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable()
    lora = model.peft_config["default"]
    targets = lora.target_modules
    description = {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout,
                   "target_modules": targets if isinstance(targets, str) else sorted(targets),
                   "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return model.to(device), processor, device, dtype, description


def finetune(settings: FinetuneSettings, say: Callable[[str], None] = lambda m: None) -> dict:
    """Train, write the adapter and ADAPTER_DIR/finetune.json; returns the report (finetune.json's content)."""
    settings.check()
    examples, rows = read_examples(settings.traces, settings.min_reward)
    train, held_out = split_examples(examples, settings.eval_fraction, settings.seed)
    from filelock import FileLock, Timeout

    lock = FileLock(str(Path(settings.output).resolve()) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BadRequest(f"Another finetune is writing '{settings.output}'; wait for it to finish.") from None
    try:
        out = prepare_output(settings)
        return _train(settings, out, rows, train, held_out, say)
    finally:
        lock.release()


def _train(settings, out: Path, rows: dict, train: list[Example], held_out: list[Example], say) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(settings.seed)
    say(f"{rows['used']} of {rows['read']} rows qualify ({rows['corrected']} corrected); {len(train)} train, "
        f"{len(held_out)} held out")
    started = time.perf_counter()
    model, processor, device, dtype, lora = load_for_training(settings)
    load_s = time.perf_counter() - started
    eval_set, eval_on = (held_out, "held_out") if held_out else (train, "train")
    previous = _read_report(out) if settings.resume else {}
    if previous.get("before") and previous.get("eval_on") == eval_on:
        before = previous["before"]
    else:
        say(f"generating {len(eval_set)} {eval_on.replace('_', '-')} answers before training")
        before = evaluate_examples(model, processor, eval_set, settings.max_new_tokens, device)
    report = {
        "status": "training", "base": settings.model, "adapter_start": settings.adapter, "output": str(out),
        "rows": rows, "train_examples": len(train), "eval_examples": len(eval_set), "eval_on": eval_on,
        "lora": lora, "lr": settings.lr, "batch_size": settings.batch_size, "max_steps": settings.max_steps,
        "epochs": None if settings.max_steps else settings.epochs, "min_reward": settings.min_reward,
        "device": str(device), "dtype": str(dtype).replace("torch.", ""), "seed": settings.seed,
        "before": before,
    }
    write_atomic(out / REPORT_FILE, (json.dumps(report, indent=1) + "\n").encode())
    resume_from = _last_checkpoint(out) if settings.resume else None
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.lr,
        max_steps=settings.max_steps or -1,
        num_train_epochs=settings.epochs,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        report_to=[],
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda" and dtype == torch.bfloat16,
        fp16=device.type == "cuda" and dtype == torch.float16,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not settings.progress,
        seed=settings.seed,
        data_seed=settings.seed,
        save_safetensors=True,
        gradient_checkpointing=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=TraceDataset(train, processor),
                      data_collator=collate(processor.tokenizer.pad_token_id), callbacks=[_save_last_step_callback()])
    t0 = time.perf_counter()
    start_step = int(resume_from.name[11:]) if resume_from else 0
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_s = time.perf_counter() - t0
    steps = trainer.state.global_step - start_step
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    _save_adapter(model, out)
    say(f"generating {len(eval_set)} {eval_on.replace('_', '-')} answers after training")
    after = evaluate_examples(model, processor, eval_set, settings.max_new_tokens, device)
    report.update({
        "status": "done",
        "steps": trainer.state.global_step,
        "steps_this_run": steps,
        "resumed_from_step": start_step if resume_from else None,
        "loss_first": losses[0][1] if losses else None,
        "loss_last": losses[-1][1] if losses else None,
        "losses": [{"step": s, "loss": round(v, 5)} for s, v in losses],
        "load_s": round(load_s, 2),
        "train_s": round(train_s, 2),
        "seconds_per_step": round(train_s / steps, 3) if steps else None,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "after": after,
    })
    write_atomic(out / REPORT_FILE, (json.dumps(report, indent=1) + "\n").encode())
    return report


def _save_last_step_callback():
    from transformers import TrainerCallback

    class SaveLastStep(TrainerCallback):
        """A checkpoint at the final step too (the Trainer saves every save_steps only): --resume continues there."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = True
            return control

    return SaveLastStep()


def _save_adapter(model, out: Path) -> None:
    """save_pretrained into a scratch folder, then each file moved into place (a reader never sees half a file)."""
    scratch = out / f".adapter-{os.getpid()}"
    if scratch.exists():
        shutil.rmtree(scratch)
    model.save_pretrained(str(scratch))
    for item in scratch.iterdir():
        os.replace(item, out / item.name)
    scratch.rmdir()


def _read_report(out: Path) -> dict:
    try:
        return json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def losses_fall(report: dict) -> bool:
    """Whether the mean loss of the last quarter of steps is below that of the first quarter."""
    values = [e["loss"] for e in report.get("losses") or []]
    if len(values) < 4:
        return False
    quarter = max(1, len(values) // 4)
    return sum(values[-quarter:]) / quarter < sum(values[:quarter]) / quarter

