"""SEER's shared state in one SQL database (SQLite for one server, PostgreSQL for several): the trace log with its
rewards, the skill rounds, the label-id registries and the proposal masks, beside the study state of active
learning (`seer.active_learning.study_state`). With the `state_db` setting every server of a team reads and writes
these tables, so a label saved through one server rewards the proposal another made, one round closes once, and a
new structure gets one id. Without it, the files under the datastore's `.seer` folder are used as before.

`database.StateDatabase` opens the database and its schema; `trace_table`, `skill_round_table` and `label_id_table`
put the file-backed classes' interfaces on it (`seer.loop.state_import` imports a server's files once).
"""
