"""Which study an annotator gets next.

`study_state` is the study-state database (scores, leases, reward counts; SQLite or PostgreSQL); `scoring`
scores unlabelled studies from the traces (phrasing disagreement, skill coverage, out-of-view evidence, backbone
uncertainty); `strategy` keeps the database in step with the datastore and hands out leases; `simulate` replays
the loop on a labelled folder to compare strategies (simulate-al). May import everything below it, and
`seer.pipeline`.
"""
