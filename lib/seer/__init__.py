"""SEER Label core: free-text requests -> executable segmentation targets -> masks.

Packages by stage, each importing only the ones before it (tests/test_layout.py checks this):

  base modules      settings, errors, files, cache, memory, devices, housekeeping, metrics, sample_data
  imaging/          volumes, SEER's 8 slice views, image evidence
  reasoning/        hygiene, lexicon and sides, targets, skills, prompts, trace format, reasoners/
  segmentation/     backbones/, atlases, registration
  loop/             trace log, rewards, skill rounds, the annotation-loop worker, what was learned, export
  pipeline          the one entry the app, the command line and the benchmarks share
  active_learning/  study state, scoring, the next-sample strategy, simulate-al
  pacs/             DICOM SEG
  training/         fine-tuning and evaluation
  commands          the command line's command bodies (main.py only parses arguments)

Framework-free: nothing here imports MONAI Label. Heavy dependencies (SimpleITK, sentence-transformers,
transformers) are imported lazily by the reasoner or backbone that needs them.
"""

__version__ = "0.1.0"
