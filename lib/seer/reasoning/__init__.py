"""From a free-text request to an executable target.

`hygiene` sets aside injected markup and text posing as instructions; `lexicon` is the concept table (data/
lexicon.json); `parser` reads a text against it in named stages, with `sides` (laterality rules); `label_names`
reads a team's label names by their naming conventions (data/label_conventions.json) and `label_check` reports how
a map is read; `targets` resolves an answer onto a label table or refuses it; `skills` is the skill bank and its
retrieval; `prompts` and `trace` are the SEER model's input and output format; `embeddings` the optional
sentence-embedding fallback; `reasoners/` holds one file per reasoner. Imports the base and `seer.imaging` only.
"""
