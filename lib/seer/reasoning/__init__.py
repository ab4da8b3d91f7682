"""From a free-text request to an executable target.

`hygiene` strips injected markup and instructions; `lexicon` (the curated anatomy in data/lexicon.json and the
parser) and `sides` (laterality rules) read the text; `targets` resolves an answer onto a label table or refuses
it; `skills` is the skill bank and its retrieval; `prompts` and `trace` are the SEER model's input and output
format; `embeddings` the optional sentence-embedding fallback; `reasoners/` holds one file per reasoner.
Imports the base and `seer.imaging` only.
"""
