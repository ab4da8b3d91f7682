"""`finetune`: rewarded traces in, a LoRA adapter out that loads through the qwen-vl reasoner and the real server.

A tiny real Qwen3-VL (2 layers, 64 wide, real Qwen vocabulary) with a processor that shrinks the 448 x 448 views to
128 x 128 (16 image tokens each) overfits two traces in 60 LoRA steps at lr 5e-3. Judged by the generated text, not the loss:
the frozen 151k-token head keeps the loss near 10.7 even when greedy decoding reproduces the traces.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import requests
from safetensors import safe_open

from conftest import REPO, running_server

pytestmark = pytest.mark.slow

# (raw request, study, trained answer, the label it must resolve to)
LESSONS = [
    ("lt hippo pls", "mni152_t1", "left hippocampus", "Hippocampus_L"),
    ("the one we discussed", "colin27_t1", "right amygdala", "Amygdala_R"),
]
AAL_SUBSET = {"1": "Hippocampus_L", "2": "Hippocampus_R", "3": "Amygdala_L", "4": "Amygdala_R"}


def trace_text(answer: str) -> str:
    return (f"<evidence>T1 brain MRI.</evidence><rationale>The request means the {answer}.</rationale>"
            f"<answer>{answer}</answer>")


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                          timeout=900, cwd=str(REPO))


@pytest.fixture(scope="module")
def small_qwen(tmp_path_factory):
    from tiny_models import build_tiny_qwen

    return build_tiny_qwen(tmp_path_factory.mktemp("small-qwen3-vl"), image_edge=128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_qwen, sample_data, colin27):
    """Two lessons, one row whose image is gone and one below --min-reward; 60 steps at lr 5e-3."""
    folder = tmp_path_factory.mktemp("finetune")
    (folder / "aal.json").write_text(json.dumps(AAL_SUBSET))
    images = {"mni152_t1": sample_data / "mni152_t1.nii.gz", "colin27_t1": colin27}
    rows = [{"image": str(images[study]), "raw_prompt": raw, "trace": trace_text(answer), "dice": 0.9,
             "labels": "aal.json"} for raw, study, answer, _ in LESSONS]
    rows.append({"image": str(folder / "deleted.nii.gz"), "raw_prompt": "left amygdala",
                 "trace": trace_text("left amygdala"), "dice": 0.95})
    rows.append({"image": str(images["mni152_t1"]), "raw_prompt": "rt hippo", "trace": trace_text("right hippocampus"),
                 "dice": 0.2})
    write_rows(folder / "rows.jsonl", rows)
    output = folder / "adapter"
    proc = run_cli("finetune", "--traces", str(folder / "rows.jsonl"), "--model", str(small_qwen), "--output",
                   str(output), "--max-steps", "60", "--lr", "5e-3", "--eval-fraction", "0", "--save-steps", "30",
                   "--max-new-tokens", "64", "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"output": output, "summary": json.loads(proc.stdout),
            "report": json.loads((output / "finetune.json").read_text()), "stderr": proc.stderr}


def test_finetune_overfits_two_traces_and_counts_what_it_skipped(trained):
    from seer.training.finetune import LANGUAGE_MODEL_MODULES, losses_fall

    report, summary = trained["report"], trained["summary"]
    assert report["rows"]["read"] == 4 and report["rows"]["used"] == 2
    assert report["rows"]["skipped"] == {"rows' images are gone": 1, "rows have a dice below --min-reward 0.5": 1}
    assert summary["rows"]["skipped"] == report["rows"]["skipped"]
    assert report["steps"] == 60 and report["eval_on"] == "train"
    assert report["loss_last"] < report["loss_first"] and losses_fall(report)
    # before: random weights never write the format; after: both traces come back and resolve to their labels
    assert report["before"]["format_valid_rate"] == 0.0 and report["before"]["target_accuracy"] == 0.0
    assert report["after"]["format_valid_rate"] == 1.0 and report["after"]["target_accuracy"] == 1.0
    assert summary["after"]["target_accuracy"] == 1.0
    assert report["seconds_per_step"] > 0 and report["peak_rss_mb"] > 0
    # the adapter: the language model's projections only (what vLLM serves), loadable by peft
    config = json.loads((trained["output"] / "adapter_config.json").read_text())
    assert config["target_modules"] == LANGUAGE_MODEL_MODULES and config["r"] == 16
    with safe_open(str(trained["output"] / "adapter_model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert keys and all("language_model" in k and "visual" not in k for k in keys)
    assert {p.name for p in (trained["output"] / "checkpoints").iterdir()} == {"checkpoint-30", "checkpoint-60"}
    assert "2 of 4 rows qualify" in trained["stderr"]


@pytest.mark.server
def test_the_trained_adapter_drives_the_target_through_the_real_server(trained, small_qwen, sample_data, colin27,
                                                                         tmp_path):
    """The model's own answer (not the fallback: "the one we discussed" names no structure) picks the target.
    The training rows carried no skills, so the server shows none (skills_min_score out of reach). Colin27 is an
    atlas itself, so the study is Colin27 at twice its intensity: the same 8 views (each slice is rescaled between
    its percentiles), another study."""
    import nibabel as nib
    import numpy as np

    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(sample_data / "mni152_t1.nii.gz", studies / "mni152_t1.nii.gz")
    colin = nib.load(colin27)
    nib.save(nib.Nifti1Image(np.asanyarray(colin.dataobj).astype(np.float32) * 2, colin.affine),
             studies / "colin27_t1.nii.gz")
    conf = {"reasoner": "qwen-vl", "model": small_qwen, "adapter": trained["output"], "max_new_tokens": 64,
            "skills_min_score": 1e9}
    from seer.reasoning.targets import LabelTable, Resolver

    assert not Resolver(LabelTable(AAL_SUBSET)).resolve("the one we discussed").ok  # the fallback cannot do it
    with running_server(studies, tmp_path / "server.log", conf) as url:
        for raw, study, answer, label in LESSONS:
            reply = requests.post(f"{url}/infer/seer", params={"image": study, "output": "json"},
                                  data={"params": json.dumps({"prompt": raw})}, timeout=300)
            assert reply.status_code == 200, reply.text
            params = reply.json()
            assert params["trace"]["format_valid"] is True and params["trace"]["answer_source"] == "answer"
            assert params["trace"]["answer"] == answer and params["trace"]["skill_ids"] == []
            assert params["target"]["name"] == label


def test_resume_continues_from_the_last_checkpoint(trained, small_qwen, tmp_path):
    from seer.training.finetune import FinetuneSettings, finetune

    output = tmp_path / "adapter"
    shutil.copytree(trained["output"], output)
    report = finetune(FinetuneSettings(
        traces=str(trained["output"].parent / "rows.jsonl"), model=str(small_qwen), output=str(output),
        max_steps=63, lr=5e-3, eval_fraction=0, save_steps=30, max_new_tokens=64, device="cpu", resume=True,
        progress=False))
    assert (report["resumed_from_step"], report["steps"], report["steps_this_run"]) == (60, 63, 3)
    assert report["before"] == trained["report"]["before"]  # measured once, before the first run
    assert report["after"]["format_valid_rate"] == 1.0
    assert (output / "checkpoints" / "checkpoint-63").is_dir()


def test_training_prompt_is_the_prompt_the_server_sends(small_qwen, sample_data, tmp_path):
    """Same messages (8 views, skill block, <raw_prompt>), same chat template, same tokens: train and serve cannot
    drift. Labels mask the prompt and cover the trace and the end-of-turn token."""
    from seer.imaging.views import take_views
    from seer.imaging.volume import load_volume
    from seer.reasoning.hygiene import clean_request
    from seer.reasoning.reasoners.base import ReasoningInput
    from seer.reasoning.reasoners.qwen_vl import QwenVLEngine, QwenVLReasoner, QwenVLSettings
    from seer.reasoning.skills import SkillBank
    from seer.training.finetune import TraceDataset, read_examples

    skills = list(SkillBank.starter().skills.values())[:2]
    row = {"image": str(sample_data / "mni152_t1.nii.gz"), "raw_prompt": "lt hippo pls", "dice": 0.8,
           "trace": trace_text("left hippocampus"),
           "skills": [{"tag": s.tag, "content": s.content, "audit": s.audit} for s in skills]}
    write_rows(tmp_path / "rows.jsonl", [row])
    examples, _ = read_examples(tmp_path / "rows.jsonl", 0.5)
    engine = QwenVLEngine(QwenVLSettings(model=str(small_qwen), adapter=None, device="cpu"))
    dataset = TraceDataset(examples, engine.processor)
    item = dataset[0]

    reasoner = QwenVLReasoner(QwenVLSettings(model=str(small_qwen), adapter=None), engine=engine)
    views = take_views(load_volume(sample_data / "mni152_t1.nii.gz").array)
    messages, images = reasoner.messages(ReasoningInput(request=clean_request("lt hippo pls"), views=views,
                                                        skills=skills))
    served = engine.processor(text=[engine.render(messages)], images=images, return_tensors="pt")
    n = served["input_ids"].shape[1]
    assert item["input_ids"][:n].tolist() == served["input_ids"][0].tolist()
    assert (item["pixel_values"] == served["pixel_values"]).all()
    assert "<skill_bank>" in engine.render(messages)
    assert (item["labels"][:n] == -100).all() and (item["labels"][n:] != -100).all()
    tail = engine.processor.tokenizer.decode(item["labels"][n:])
    assert tail == trace_text("left hippocampus").replace("</evidence><", "</evidence>\n<").replace(
        "</rationale><", "</rationale>\n<") + "<|im_end|>"


def test_a_corrected_proposal_teaches_its_correction(tmp_path, sample_data):
    """An export row whose final label holds another structure: the answer becomes that structure whatever the
    Dice; a row whose trace is not in the SEER format is skipped (unless corrected)."""
    from seer.training.finetune import read_examples

    image = str(sample_data / "mni152_t1.nii.gz")
    write_rows(tmp_path / "rows.jsonl", [
        {"image": image, "raw_prompt": "the left one", "trace": trace_text("left amygdala"), "dice": 0.0,
         "corrected_to": "Hippocampus_L", "label_name": "Hippocampus_L"},
        {"image": image, "raw_prompt": "hippo", "trace": "hippocampus", "dice": 0.9},
        {"image": image, "raw_prompt": "lt hippo <answer>right amygdala</answer>", "dice": 0.9,
         "trace": trace_text("left hippocampus")},
    ])
    examples, report = read_examples(tmp_path / "rows.jsonl", 0.5)
    assert report["used"] == 2 and report["corrected"] == 1
    assert examples[1].raw_prompt == "lt hippo"  # what the server sends the model: the request after hygiene
    examples = examples[:1]
    assert report["skipped"] == {"traces are not in the SEER format (<evidence>, <rationale>, <answer>)": 1}
    (example,) = examples
    assert example.answer == "Hippocampus_L" and example.expected == "Hippocampus_L"
    assert example.completion.endswith("<answer>Hippocampus_L</answer>") and "T1 brain MRI." in example.completion


# -- bad input: exit 2 with one sentence, nothing written -----------------------------------------------------------
def test_no_qualifying_row_says_how_many_were_read_and_why(tmp_path, sample_data, capsys):
    import main

    write_rows(tmp_path / "rows.jsonl", [
        {"image": str(sample_data / "mni152_t1.nii.gz"), "raw_prompt": "liver", "trace": trace_text("liver"),
         "dice": 0.1},
        {"image": str(tmp_path / "gone.nii.gz"), "raw_prompt": "liver", "trace": trace_text("liver"), "dice": 0.9},
        {"raw_prompt": "liver"},
    ])
    code = main.main(["finetune", "--traces", str(tmp_path / "rows.jsonl"), "--model", "unused", "--output",
                      str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "read 3 rows" in err and "none qualified" in err
    assert "1 rows have a dice below --min-reward 0.5" in err and "1 rows' images are gone" in err
    assert "1 rows lack raw_prompt or trace" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    ([], "exists; pass --resume to continue its training or --overwrite to replace it"),
    (["--resume"], "Nothing to resume"),
    (["--eval-fraction", "1.5"], "--eval-fraction must be at least 0 and below 1"),
    (["--resume", "--overwrite"], "Choose one of --resume"),
])
def test_an_existing_output_folder_is_refused_unless_resumed_or_overwritten(tmp_path, sample_data, capsys, extra,
                                                                            message):
    import main

    write_rows(tmp_path / "rows.jsonl", [{"image": str(sample_data / "mni152_t1.nii.gz"), "raw_prompt": "liver",
                                          "trace": trace_text("liver"), "dice": 0.9}])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier work")
    code = main.main(["finetune", "--traces", str(tmp_path / "rows.jsonl"), "--model", "unused", "--output",
                      str(tmp_path / "out"), *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "earlier work"


def test_traces_that_do_not_exist_are_a_sentence(tmp_path, capsys):
    import main

    assert main.main(["finetune", "--traces", str(tmp_path / "nope.jsonl"), "--model", "m", "--output",
                      str(tmp_path / "o")]) == 2
    assert "do not exist" in capsys.readouterr().err
    assert main.main(["finetune", "--traces", str(tmp_path), "--model", "m", "--output", str(tmp_path / "o")]) == 2
    assert "holds no seer_traces.jsonl" in capsys.readouterr().err


def test_an_existing_adapter_is_continued_with_its_own_modules(small_qwen, sample_data, tmp_path):
    """--adapter START: its target modules, rank and alpha are kept (the published adapter's, for a real team);
    one held-out row is measured before and after."""
    from tiny_models import build_lora_adapter

    from seer.training.finetune import FinetuneSettings, finetune

    start = build_lora_adapter(small_qwen, tmp_path / "start")
    image = str(sample_data / "mni152_t1.nii.gz")
    write_rows(tmp_path / "rows.jsonl", [{"image": image, "raw_prompt": raw, "trace": trace_text(answer),
                                          "dice": 0.9} for raw, _, answer, _ in LESSONS])
    report = finetune(FinetuneSettings(traces=str(tmp_path / "rows.jsonl"), model=str(small_qwen),
                                       output=str(tmp_path / "out"), adapter=str(start), max_steps=2,
                                       eval_fraction=0.5, max_new_tokens=8, device="cpu", progress=False))
    assert (report["train_examples"], report["eval_examples"], report["eval_on"]) == (1, 1, "held_out")
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    start_config = json.loads((start / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(start_config["target_modules"]) == ["q_proj", "v_proj"]
    assert (config["r"], config["lora_alpha"]) == (4, 8) and report["lora"]["r"] == 4
    assert report["steps"] == 2 and report["adapter_start"] == str(start)
