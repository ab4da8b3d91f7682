"""Typed settings, parsed once from MONAI Label `--conf KEY VALUE` strings (or CLI flags) and passed down.

Every key, its type, default and meaning is in `KEYS`; the table of docs/configuration.md is generated from it
by docs/gen_configuration.py (tests/test_docs.py checks that they agree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from seer.errors import BadRequest
from seer.files import user_cache_dir

# The names used everywhere (conf values, CLI flags, /info). The registries that build them
# (seer.reasoning.reasoners.REASONERS, seer.segmentation.backbones.BACKBONES) hold exactly these names.
REASONER_NAMES = ("offline", "qwen-vl", "openai")
REASONER_CHOICES = ("auto", *REASONER_NAMES)
BACKBONE_NAMES = ("atlas", "voxtell", "bundle")

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_sample_data() -> Path:
    """Where the sample data lives when the `sample_data` setting is empty: $SEER_SAMPLE_DATA, else the checkout's
    sample-data/ (running from a clone), else the user cache (an installed package has no checkout)."""
    if os.environ.get("SEER_SAMPLE_DATA"):
        return Path(os.environ["SEER_SAMPLE_DATA"])
    if (REPO_ROOT / "main.py").exists() and (REPO_ROOT / "apps" / "seer").is_dir():
        return REPO_ROOT / "sample-data"
    return user_cache_dir() / "sample-data"


DEFAULT_SAMPLE_DATA = default_sample_data()

# key: (type, default, help)
KEYS: dict[str, tuple[type, object, str]] = {
    "reasoner": (str, "auto", "auto | qwen-vl | openai | offline: which reasoner turns requests into targets "
                 "(auto = qwen-vl when its weights are on this machine, else offline)"),
    "model": (str, "Qwen/Qwen3-VL-4B-Instruct", "qwen-vl base model: local folder or hub id (full v1.0 or merged "
              "weights too, with adapter none)"),
    "adapter": (str, "Ztrura/SEER", "qwen-vl LoRA adapter (SEER v1.1): local folder or hub id; none for full weights"),
    "processor": (str, "", "qwen-vl processor folder or hub id; default: the base model's"),
    "device": (str, "auto", "qwen-vl device: auto (cuda when available) | cpu | cuda | cuda:N"),
    "dtype": (str, "auto", "qwen-vl dtype: auto (bfloat16 on GPU, float32 on CPU) | bfloat16 | float16 | float32"),
    "max_new_tokens": (int, 256, "tokens generated per request (the reference uses 256)"),
    "reasoner_batch": (int, 1, "qwen-vl: requests waiting at the same time are generated together, up to this many"),
    "kv_cache": (str, "dynamic", "qwen-vl: the key/value cache during generation: dynamic (grows per token) | static "
                 "(allocated once at its full length, which reasoner_compile needs)"),
    "reasoner_compile": (bool, False, "qwen-vl: torch.compile the decoding step (needs kv_cache static); the first "
                         "request of each batch size compiles (minutes), later ones reuse it"),
    "merge_adapter": (bool, True, "qwen-vl: merge the LoRA adapter into the weights at load when it touches only the "
                      "language model (the same answers, no adapter work per token)"),
    "vision_cache": (int, 64, "qwen-vl: views whose vision encoding is kept (8 per study): a second request on a study "
                     "reuses them; 0 = encode every time"),
    "stop_at_answer": (bool, True, "qwen-vl: stop generating once `</answer>` is written (the rest would be "
                       "ignored); false = always max_new_tokens or the end token"),
    "reasoner_cache": (int, 512, "traces kept for identical (image, request, skills, model); emptied when the skill "
                       "bank changes"),
    "endpoint": (str, "", "openai reasoner: base URL of an OpenAI-compatible server, e.g. http://host:8000/v1"),
    "endpoint_model": (str, "seer", "openai reasoner: model name at the endpoint (served LoRA module or model)"),
    "endpoint_timeout": (float, 60.0, "openai reasoner: seconds to wait for one reply"),
    "backbone": (str, "atlas", "atlas | voxtell | bundle: which segmentation backbone executes targets"),
    "backbone_model": (str, "", "voxtell: model folder (plans.json, fold_0/); bundle: MONAI bundle folder"),
    "backbone_device": (str, "auto", "voxtell / bundle device: auto (cuda when available) | cpu | cuda:N"),
    "backbone_dtype": (str, "auto", "voxtell / bundle precision: auto (bfloat16 autocast on GPU for voxtell, float32 "
                       "otherwise) | bfloat16 | float16 | float32"),
    "sw_batch_size": (int, 0, "sliding-window patches per forward pass; 0 = the backbone's default (voxtell 1, "
                      "bundle: its inferer)"),
    "sw_overlap": (float, -1.0, "sliding-window overlap (0-0.9); negative = the backbone's default (voxtell 0.5, "
                   "bundle: its inferer)"),
    "bundle_network": (str, "", "bundle without a folder: MONAI network_def as JSON (backbone_model is then the "
                       "weights file)"),
    "bundle_labels": (str, "", "bundle without a folder: labels.json of the network's output channels"),
    "bundle_roi": (str, "96,96,96", "bundle without a folder: sliding-window patch size"),
    "bundle_preprocessing": (str, "", "bundle without a folder: JSON list of dictionary transforms after loading "
                             "and RAS (default: z-score of non-zero voxels)"),
    "voxtell_embeddings": (str, "", "voxtell: text-embedding bank (.npz); default text_embeddings.npz in or beside "
                           "the model folder"),
    "voxtell_text_encoder": (str, "Qwen/Qwen3-Embedding-4B", "voxtell: text encoder for prompts missing from the "
                             "bank, used only when it is on this machine"),
    "atlases": (str, "", "extra atlas folders (os.pathsep-separated), each holding <name>/image.nii.gz, labels.nii.gz, "
                "labels.json; the sample data's atlases/ is always included when present"),
    "sample_data": (str, "", "folder of the sample data whose atlases/ are always used; default: $SEER_SAMPLE_DATA, "
                    "else the checkout's sample-data/, else ~/.cache/seer-label/sample-data"),
    "datastore_atlases": (bool, True, "use every datastore study with a final label as an atlas"),
    "max_atlases": (int, 5, "at most this many atlases are registered per request "
                    "(same modality and closest field of view first)"),
    "deformable": (bool, True, "add a demons deformable stage after the affine one (same-modality atlases only)"),
    "affine_spacing": (float, 3.0, "mm grid of the affine registration"),
    "demons_spacing": (float, 2.0, "mm grid of the demons registration"),
    "atlas_cache_mb": (float, 2048.0, "memory for loaded atlases, their downsampled images, target masks and "
                       "registrations (MB); what it evicts is read again from disk (registrations are kept there)"),
    "volume_cache_mb": (float, 1024.0, "memory for studies loaded for requests (MB; each counted twice its voxel "
                        "array, for its SimpleITK copy)"),
    "registrations_max_mb": (float, 4096.0, "disk for cached registrations in <datastore>/.seer/registrations (MB); "
                             "the least recently used pairs are deleted first (and registered again when asked for)"),
    "proposals_keep_days": (float, 30.0, "a proposal mask whose reward is recorded is deleted this many days after it "
                            "was made"),
    "proposals_max_mb": (float, 2048.0, "disk for proposal masks (MB); beyond it the oldest are deleted, rewarded or "
                         "not (checked at start and hourly)"),
    "trace_log_mb": (float, 64.0, "the live trace log (<datastore>/.seer/traces.jsonl) is rotated past this size "
                     "(MB): its rows go to a gzip archive beside it, and only the rows of proposals still waiting for "
                     "a reward stay live"),
    "skills": (str, "", "skill bank JSONL that seeds round 0 of a datastore's skill rounds (read once, when no round "
               "exists yet); default: the starter skills. `reason` / `segment` / `evaluate --skills` use the file as it is"),
    "skills_top_k": (int, 3, "skills retrieved per request"),
    "skills_min_score": (float, 8.0, "minimum retrieval score for a skill to be shown to the reasoner"),
    "rewards": (bool, True, "score every proposal against the final label saved for its study (background worker) "
                "and evolve the skill bank from those rewards"),
    "reward_queue": (int, 256, "studies waiting for rewards at most; beyond that they are found by the next scan"),
    "skill_round": (int, 20, "rewards per skill round: the bank in use is frozen until this many new rewards close "
                    "the round"),
    "skill_penalty": (float, 2.0, "utility = sum of Dice gains - penalty x sum of Dice drops where a skill was used; "
                      "below zero the skill retires"),
    "skill_harvest_dice": (float, 0.5, "a rewarded trace becomes a new skill at this Dice or more (and the gain below)"),
    "skill_harvest_gain": (float, 0.3, "... and at this Dice gain over the raw request or more (format valid)"),
    "skill_merge_keep": (int, 10, "skills kept per (dataset, tag, target); the others' aliases go to the best"),
    "skill_cap_fraction": (float, 0.05, "the bank keeps at most max(skill_cap_min, fraction x rewarded requests) "
                           "skills, best first"),
    "skill_cap_min": (int, 50, "floor of that cap (the contract's is 1, which empties a young team's bank)"),
    "campaign": (str, "", "what the team is labelling, for active learning: requests separated by ';' (or ','), "
                 "e.g. 'left hip bone; right hip bone; sacrum'; default: the 3 most frequent targets in the trace log"),
    "state_db": (str, "", "SEER's shared state in one database: study state (scores, leases), the trace log with "
                 "rewards, skill rounds, label ids and proposal masks; a postgresql:// URL that several servers share "
                 "(or sqlite:///path for one). The datastore's state files are imported once. Default: files under "
                 "`<datastore>/.seer`, study state in SQLite there"),
    "lease_s": (float, 1800.0, "strategy seer: a study handed to one annotator is not handed to another for this "
                "many seconds, unless saved or released first"),
    "lease_one_per_client": (bool, True, "strategy seer: a client (user and client_id) asking for the next study "
                             "gives back the study it holds unsaved, in the same transaction, so a skipped study "
                             "goes back to the team; false = a client may hold several studies at once"),
    "review": (bool, False, "a final label is `submitted` and teaches (rewards, skill rounds, atlases) only once a "
               "reviewer approves it (POST /seer/review/{image}); false = a final label is approved on save"),
    "review_self": (bool, False, "review: a reviewer may approve or reject their own label"),
    "reads_per_study": (int, 1, "strategy seer hands a study to this many distinct annotators (never twice to one) "
                        "before it counts as labelled; each final read is kept beside the others, and the agreement "
                        "of every two reads (Dice, mean surface distance per structure) is in the save's reply"),
    "agreement_min_dice": (float, 0.8, "two reads whose Dice on any structure is below this go to the front of the "
                           "review queue (GET /seer/review/queue) and are counted in /info"),
    "al_phrasings": (int, 4, "scoring seer: phrasings reasoned per campaign request (the request, its skill-bank "
                     "aliases, requests from the trace log that resolved to the same target)"),
    "al_backbone": (bool, True, "scoring seer: also run the backbone on each unlabelled study for uncertainty "
                    "and field-of-view evidence (slower; off = reasoning parts only)"),
    "scan_s": (float, 30.0, "seconds between the background scans for new or changed studies (active learning) and "
               "for final labels saved outside the API (rewards)"),
    "infer_concurrency": (int, 2, "inferences run off the server's event loop, at most this many at once (others "
                          "wait their turn), each with an equal share of the CPU cores for registration and torch; "
                          "/info, next-sample and label saves answer meanwhile. 0 = inline, as stock MONAI Label (one "
                          "request at a time, everything else waits)"),
    "store_seg": (bool, False, "DICOMweb studies: a saved final label is also stored in the PACS as a DICOM SEG "
                  "(STOW-RS), its segments named and SNOMED-coded from this server's label table"),
    "dicomweb_modalities": (str, "CT,MR", "DICOMweb studies: the modalities listed as studies (comma-separated)"),
    "dicomweb_cache_s": (float, 60.0, "DICOMweb studies: seconds the PACS's series and SEG lists are reused "
                         "(a label saved here refreshes them at once)"),
    "dicomweb_retries": (int, 5, "DICOMweb studies: attempts per PACS request that fails to connect or gets 408, 429, "
                         "503 or 504, with waits of 2, 4, 8, 16 s between them (5: about 30 s before a PACS that is "
                         "down gives a 503)"),
    "auth_realm": (str, "", "switch MONAI Label's token auth on: the OpenID realm URL whose public key signs the "
                   "tokens (e.g. https://keycloak.example/realms/monailabel); roles decide who infers and saves"),
    "embeddings": (bool, False, "also try offline sentence embeddings when the lexicon finds no target "
                   "(off by default: on the two request sets of bench/ it fixed 2 requests and broke 2)"),
    "max_request_chars": (int, 1000, "longest request accepted (characters)"),
    "dataset": (str, "", "dataset name used by skill retrieval (+3 for skills harvested from the same dataset)"),
}


def split_requests(text: str) -> list[str]:
    """'left hip bone; sacrum' (or comma-separated when there is no ';') -> ['left hip bone', 'sacrum']."""
    separator = ";" if ";" in text else ","
    return [part.strip() for part in text.split(separator) if part.strip()]


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class SeerSettings:
    """Built by `from_conf` only: every default lives in `KEYS`."""

    reasoner: str
    model: str
    adapter: str
    processor: str
    device: str
    dtype: str
    max_new_tokens: int
    reasoner_batch: int
    kv_cache: str
    reasoner_compile: bool
    merge_adapter: bool
    vision_cache: int
    stop_at_answer: bool
    reasoner_cache: int
    endpoint: str
    endpoint_model: str
    endpoint_timeout: float
    backbone: str
    backbone_model: str
    backbone_device: str
    backbone_dtype: str
    sw_batch_size: int
    sw_overlap: float
    bundle_network: str
    bundle_labels: str
    bundle_roi: str
    bundle_preprocessing: str
    voxtell_embeddings: str
    voxtell_text_encoder: str
    atlases: tuple[str, ...]
    sample_data: str
    datastore_atlases: bool
    max_atlases: int
    deformable: bool
    affine_spacing: float
    demons_spacing: float
    atlas_cache_mb: float
    volume_cache_mb: float
    registrations_max_mb: float
    proposals_keep_days: float
    proposals_max_mb: float
    trace_log_mb: float
    skills: str
    skills_top_k: int
    skills_min_score: float
    rewards: bool
    reward_queue: int
    skill_round: int
    skill_penalty: float
    skill_harvest_dice: float
    skill_harvest_gain: float
    skill_merge_keep: int
    skill_cap_fraction: float
    skill_cap_min: int
    campaign: str
    state_db: str
    lease_s: float
    lease_one_per_client: bool
    review: bool
    review_self: bool
    reads_per_study: int
    agreement_min_dice: float
    al_phrasings: int
    al_backbone: bool
    scan_s: float
    infer_concurrency: int
    store_seg: bool
    dicomweb_modalities: str
    dicomweb_cache_s: float
    dicomweb_retries: int
    auth_realm: str
    embeddings: bool
    max_request_chars: int
    dataset: str
    unknown: tuple[str, ...] = field(default=())

    @classmethod
    def from_conf(cls, conf: dict | None) -> SeerSettings:
        """Parse string values; raises BadRequest naming the key and the accepted values."""
        conf = dict(conf or {})
        values: dict[str, object] = {}
        for key, (kind, default, _help) in KEYS.items():
            raw = conf.pop(key, None)
            if raw is None or raw == "":
                values[key] = default
                continue
            try:
                if kind is bool:
                    values[key] = _parse_bool(raw)
                else:
                    values[key] = kind(raw)
            except (TypeError, ValueError):
                kind_name = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, "text")
                raise BadRequest(f"Setting '{key}' must be {kind_name}, got {raw!r}: {_help}.") from None
        if str(values["adapter"]).lower() in ("none", "null", "-"):
            values["adapter"] = ""
        atlases = values.pop("atlases")
        values["atlases"] = tuple(p for p in str(atlases).split(os.pathsep) if p) if atlases else ()
        settings = cls(**values, unknown=tuple(sorted(conf)))
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.reasoner not in REASONER_CHOICES:
            raise BadRequest(f"Setting 'reasoner' must be one of {', '.join(REASONER_CHOICES)}, got {self.reasoner!r}.")
        if self.backbone not in BACKBONE_NAMES:
            raise BadRequest(f"Setting 'backbone' must be one of {', '.join(BACKBONE_NAMES)}, got {self.backbone!r}.")
        if self.kv_cache not in ("dynamic", "static"):
            raise BadRequest(f"Setting 'kv_cache' must be dynamic or static, got {self.kv_cache!r}.")
        if self.reasoner_compile and self.kv_cache != "static":
            raise BadRequest("Setting 'reasoner_compile' true needs 'kv_cache' static: only a cache of fixed length "
                             "compiles once (--conf kv_cache static).")
        if self.vision_cache < 0:
            raise BadRequest("Setting 'vision_cache' must be 0 (off) or more views.")
        if self.reasoner == "openai" and not self.endpoint:
            raise BadRequest("Setting 'reasoner' openai needs 'endpoint' (e.g. --conf endpoint http://host:8000/v1).")
        for key in ("max_atlases", "skills_top_k", "max_request_chars", "max_new_tokens", "reasoner_batch",
                    "reasoner_cache", "reward_queue", "skill_round", "skill_merge_keep", "skill_cap_min", "al_phrasings",
                    "dicomweb_retries", "reads_per_study"):
            if getattr(self, key) < 1:
                raise BadRequest(f"Setting '{key}' must be at least 1.")
        if self.backbone in ("voxtell", "bundle") and not self.backbone_model:
            raise BadRequest(
                f"Setting 'backbone' {self.backbone} needs 'backbone_model': the "
                f"{'VoxTell model folder' if self.backbone == 'voxtell' else 'MONAI bundle folder'}."
            )
        if self.skill_penalty < 0:
            raise BadRequest("Setting 'skill_penalty' must be 0 or more.")
        for key in ("skill_harvest_dice", "skill_cap_fraction", "agreement_min_dice"):
            if not 0 <= getattr(self, key) <= 1:
                raise BadRequest(f"Setting '{key}' must be between 0 and 1.")
        if not -1 <= self.skill_harvest_gain <= 1:
            raise BadRequest("Setting 'skill_harvest_gain' must be between -1 and 1.")
        if not 1 <= self.lease_s <= 7 * 24 * 3600:
            raise BadRequest("Setting 'lease_s' must be between 1 second and 7 days (604800).")
        if self.state_db and not self.state_db.startswith(("postgresql", "sqlite")):
            raise BadRequest("Setting 'state_db' must be a postgresql://user:password@host/database URL (or "
                             f"sqlite:///path), got {self.state_db.split('@')[-1]!r}.")
        if not 0 <= self.infer_concurrency <= 64:
            raise BadRequest("Setting 'infer_concurrency' must be between 0 (inline) and 64.")
        if not self.modalities():
            raise BadRequest("Setting 'dicomweb_modalities' must name at least one modality, e.g. CT,MR.")
        if not 0.1 <= self.scan_s <= 24 * 3600:
            raise BadRequest("Setting 'scan_s' must be between 0.1 seconds and a day (86400).")
        if self.dicomweb_cache_s < 0:
            raise BadRequest("Setting 'dicomweb_cache_s' must be 0 or more seconds.")
        if self.auth_realm and not self.auth_realm.startswith(("http://", "https://")):
            raise BadRequest(f"Setting 'auth_realm' must be an http(s) URL of an OpenID realm, got {self.auth_realm!r}.")
        from seer.devices import check_device_name

        check_device_name(self.device, "device")
        check_device_name(self.backbone_device, "backbone_device")
        if self.sw_overlap >= 0.95:
            raise BadRequest("Setting 'sw_overlap' must be below 0.95.")
        for key in ("atlas_cache_mb", "volume_cache_mb"):
            if not 16 <= getattr(self, key) <= 1024 * 1024:
                raise BadRequest(f"Setting '{key}' must be between 16 and 1048576 MB, got {getattr(self, key):g}.")
        for key in ("registrations_max_mb", "proposals_keep_days", "proposals_max_mb", "trace_log_mb"):
            if getattr(self, key) <= 0:
                raise BadRequest(f"Setting '{key}' must be more than 0, got {getattr(self, key):g}.")
        for key in ("affine_spacing", "demons_spacing"):
            if not 0.5 <= getattr(self, key) <= 10:
                raise BadRequest(f"Setting '{key}' must be between 0.5 and 10 mm.")

    def disk_limits(self):
        from seer.housekeeping import DiskLimits

        return DiskLimits(registrations_mb=self.registrations_max_mb, proposals_days=self.proposals_keep_days,
                          proposals_mb=self.proposals_max_mb)

    def modalities(self) -> tuple[str, ...]:
        """`dicomweb_modalities` as ('CT', 'MR')."""
        return tuple(m.strip().upper() for m in self.dicomweb_modalities.split(",") if m.strip())

    def campaign_requests(self) -> list[str]:
        """The `campaign` setting as a list of requests ('' -> [])."""
        return split_requests(self.campaign)

    def sample_data_dir(self) -> Path:
        return Path(self.sample_data) if self.sample_data else DEFAULT_SAMPLE_DATA

    def atlas_dirs(self) -> list[Path]:
        sample = self.sample_data_dir() / "atlases"
        dirs = [sample] if sample.is_dir() else []
        return dirs + [Path(p) for p in self.atlases]

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "unknown"}


def settings_from_flags(args) -> SeerSettings:
    """SeerSettings from the command line's flags (an argparse namespace): --reasoner, --model, ... --atlases."""
    conf = {"reasoner": args.reasoner}
    for flag in ("model", "adapter", "device", "dtype", "endpoint", "endpoint_model", "max_new_tokens",
                 "backbone_model", "backbone_device", "backbone_dtype", "sw_batch_size", "sw_overlap",
                 "voxtell_embeddings"):
        value = getattr(args, flag, None)
        if value is not None:
            conf[flag] = str(value)
    if getattr(args, "skills", None):
        conf["skills"] = args.skills
    if getattr(args, "embeddings", False):
        conf["embeddings"] = "true"
    if getattr(args, "backbone", None):
        conf["backbone"] = args.backbone
    if getattr(args, "atlases", None):
        conf["atlases"] = os.pathsep.join(args.atlases)
    return SeerSettings.from_conf(conf)


def settings_table_markdown() -> str:
    """Every setting as one Markdown table (key, type, default, meaning), as docs/configuration.md shows it."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, (kind, default, meaning) in KEYS.items():
        rows.append(f"| `{key}` | {kind.__name__} | `{default}` | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"
