"""The parser and resolver never raise on any text: random word salads built from the lexicon's own words, side
words, relation words, report punctuation and numbers (a crash here would be an HTTP 500 in the server)."""

import random

from seer.reasoning.lexicon import default_lexicon
from seer.reasoning.parser import _POSITIONAL, _RELATIONAL
from seer.reasoning.targets import LabelTable, Resolver

TABLES = [
    LabelTable({"1": "kidney_left", "2": "kidney_right", "3": "liver", "4": "spleen", "5": "kidney_cyst_left",
                "6": "kidney_cyst_right", "7": "vertebrae_L3", "8": "intervertebral_discs", "9": "femur_left",
                "10": "femur_right", "11": "hip_left", "12": "hip_right", "13": "sacrum"}),
    LabelTable({"1": "Precentral_L", "2": "Precentral_R", "3": "Hippocampus_L", "4": "Hippocampus_R"}),
    LabelTable({"1": "liver", "2": "cancer"}),
]
GLUE = ["the", "of", "and", "but", "not", "only", "side", "same", "other", "one", "finding", "2", "1)", "2.",
        "R>L", "-", ",", ".", ";", ":", "(", ")", "please", "segment", "contour", "outline", "mask", "need", "with",
        "containing", "screen", "radiological", "facing", "my", "hand", "face", "field", "visual", "s/p",
        "nephrectomy", "partial", "normal", "patent", "as well as", "what's left of", "rt", "write", "pan", "creas",
        "right side of my", "the left side of the", "same side as the", "contralateral to the", "next to the",
        "below the", "on the other side", "the one that is not on the", "tumour board", "the organ that makes"]


def words_to_draw():
    lex = default_lexicon()
    phrases = [" ".join(p) for p in list(lex.phrases)[:400]]
    lesions = sorted(lex.lesion_words)[:60]
    sides = sorted(lex.side_vocabulary)
    return phrases + lesions + sides + sorted(_POSITIONAL) + sorted(_RELATIONAL) + GLUE


def test_random_texts_never_raise():
    rng = random.Random(11)
    vocabulary = words_to_draw()
    resolvers = [Resolver(table) for table in TABLES]
    for _ in range(1500):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 18)))
        for resolver in resolvers:
            resolution = resolver.resolve(text, rng.choice(["head", "body", None]))
            assert resolution.kind  # a match or a refusal kind, never an exception
            assert resolution.entry is not None or resolution.reason


def test_reports_that_reach_their_own_text_again_do_not_recurse():
    """Texts a review found looping (a report's context rewritten, then parsed again) or raising."""
    resolver = Resolver(TABLES[0])
    for text in ["Right renal stone. Please segment the other kidney as well as you can.",
                 "Spleen normal. Stone in the right ureter. Segment the other kidney, please.",
                 "Spleen unremarkable. Right ureteric stone. Please segment the kidney on that side, thanks.",
                 "left nephrectomy as well as splenectomy",
                 "Left nephrectomy as well as splenectomy. Segment the remaining kidney.",
                 "segment the kidney, not bilateral"]:
        assert resolver.resolve(text, "body").kind


def test_mirrored_requests_never_keep_their_side(shared_data):
    """Every development request with "left"/"right" in it, mirrored (left <-> right, lt <-> rt ...), never resolves
    to the same sided label as the original: a rule that reads sides one way only would flip a side. Texts that
    place the target by a one-sided organ (liver, spleen, lingula ...) or by a stated typical language lateralisation
    are skipped: there the anatomy or the test result decides, not the mirrored word."""
    import json
    import re
    from pathlib import Path

    from seer.reasoning.hygiene import clean_request

    swap = {"left": "right", "right": "left", "lt": "rt", "rt": "lt", "lft": "rght", "rght": "lft"}
    one_sided = re.compile(r"\b(liver|hepat\w*|spleen|splenic|heart|cardiac|lingula\w*|middle lobe|ivc|vena cava|"
                           r"stomach|gallbladder|appendix|typical language)\b", re.IGNORECASE)
    repo = Path(__file__).resolve().parent.parent
    maps = {"brain-mets": repo / "bench/data/label_maps/brain-mets.json",
            "liver-msd": repo / "bench/data/label_maps/liver-msd.json"}
    sets = sorted((repo / "bench" / "data").glob("requests_dev_v*.jsonl"))
    assert sets, "the development request sets are missing from bench/data"
    for manifest in (repo / "bench" / "data").glob("requests_dev_v*.maps.json"):  # sets over maps of their own
        maps.update({name: repo / "bench/data/label_maps" / f"{name}.json" for name in json.loads(manifest.read_text())})
    resolvers: dict[str, Resolver] = {}
    checked = 0
    for path in sets:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            text = row["request"]
            if not re.search(r"\b(left|right)\b", text, re.IGNORECASE) or one_sided.search(text):
                continue
            labels = maps.get(row["dataset"], shared_data / row["dataset"] / "labels.json")
            if row["dataset"] not in resolvers:
                resolvers[row["dataset"]] = Resolver(LabelTable(json.loads(labels.read_text())))
            resolver = resolvers[row["dataset"]]
            mirrored = re.sub(r"[A-Za-z]+", lambda m: swap.get(m.group(0).lower(), m.group(0)), text)
            # as the product reads them: after request hygiene (text posing as instructions set aside); when only
            # the set-aside text held the mirrored words, there is nothing to mirror
            clean, clean_mirrored = clean_request(text).text, clean_request(mirrored).text
            if clean == clean_mirrored:
                continue
            original, flipped = resolver.resolve(clean, None), resolver.resolve(clean_mirrored, None)
            if original.entry and flipped.entry and original.entry.side in ("left", "right"):
                assert flipped.entry.name != original.entry.name, f"{text!r} and {mirrored!r} both give {original.entry.name}"
            checked += 1
    assert checked > 300
