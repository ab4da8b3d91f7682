"""From a resolved target to a mask on the study's grid.

`backbones/` holds one file per backbone (atlas, VoxTell, MONAI bundle) behind one protocol; `atlases` finds
and names the labelled studies the atlas backbone propagates from; `registration` aligns an atlas to a study
(SimpleITK affine + demons). Imports the base, `seer.imaging` and `seer.reasoning` (label tables).
"""
