"""Review: the state of each annotator's label on a study (draft, submitted, approved, rejected), who decided and
when, and which labels may teach (`label_reads`)."""
