"""The annotation loop: what happens after a mask is proposed.

`trace_log` is the durable log of every trace and reward; `rewards` scores proposals against a saved label
(Dice, and the raw request without SEER); `skill_rounds` evolves the skill bank after enough rewards;
`annotation_loop` is the background worker that ties them together; `learned` and `export` read what the loop
learned (skills, traces, SEER-Trace rows for fine-tuning). Imports the base, imaging, reasoning and segmentation.
"""
