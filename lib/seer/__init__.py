"""SEER Label core: free-text requests -> executable segmentation targets -> masks.

Framework-free: nothing here imports MONAI Label. Heavy dependencies (SimpleITK, sentence-transformers,
transformers) are imported lazily by the reasoner or backbone that needs them.
"""

__version__ = "0.1.0"
