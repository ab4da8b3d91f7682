"""The app server with the shared state database (`state_db`): a server's files imported once when it moves to
PostgreSQL, and a PostgreSQL server that stops and comes back while annotators work (requests answer, saves are
refused with 503 and nothing is lost)."""

from __future__ import annotations

import pytest
import requests
from test_annotation_server import cli, infer, save_label, seer_info, wait_for

from seer.loop.state_import import import_state_files
from seer.state_db.database import StateDatabase

from conftest import running_server

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_a_server_moving_to_postgresql_imports_its_files_once(ct_slab_study, fresh_postgres, tmp_path):
    studies = ct_slab_study
    folder, conf = studies["folder"], studies["conf"]
    with running_server(folder, tmp_path / "files.log", conf) as url:
        assert infer(url, "ct_small", "liver").status_code == 200
        assert save_label(url, "ct_small", studies["label"], {"label_names": studies["names"]}).status_code == 200
        wait_for(lambda: seer_info(url)["rewards"] == 1, what="the reward on files")
        labels = requests.get(f"{url}/info/", timeout=30).json()["models"]["seer"]["labels"]
    with running_server(folder, tmp_path / "first.log", {**conf, "state_db": fresh_postgres}) as url:
        info = seer_info(url)
        assert (info["rewards"], info["round"]) == (1, 1) and info["state_db"]["reachable"] is True
        assert requests.get(f"{url}/info/", timeout=30).json()["models"]["seer"]["labels"] == labels
        assert requests.get(f"{url}/seer/trace/ct_small", timeout=30).json()["count"] == 1
    assert "imported into the state database" in (tmp_path / "first.log").read_text()
    # what a second start does first (open_state_db): nothing to import, nothing doubled
    assert import_state_files(StateDatabase(fresh_postgres), folder / ".seer") is None
    traces = cli("traces", "--state-db", fresh_postgres, "--json")  # no server's disk needed
    assert traces["rewards"] == 1 and traces["round"] == 1 and len(traces["traces"]) == 1


def test_postgresql_down_requests_answer_saves_get_503_and_nothing_is_lost(ct_slab_study, own_postgres, tmp_path):
    studies = ct_slab_study
    database = own_postgres.new_database()
    conf = {**studies["conf"], "state_db": database}
    with running_server(studies["folder"], tmp_path / "server.log", conf) as url:
        assert infer(url, "ct_small", "liver").status_code == 200
        own_postgres.stop()
        # reasoning and masks go on; the trace waits in the server's spool
        reply = infer(url, "ct_small", "spleen")
        assert reply.status_code == 200, reply.text
        info = seer_info(url)
        assert info["state_db"]["reachable"] is False and "cannot be reached" in info["state_db"]["message"]
        saved = save_label(url, "ct_small", studies["label"], {"label_names": studies["names"]})
        assert saved.status_code == 503 and "The label was not saved" in saved.json()["detail"]
        assert requests.get(f"{url}/datastore/?output=all", timeout=30).json()["objects"]["ct_small"]["labels"] == {}
        nxt = requests.post(f"{url}/activelearning/seer", json={"client_id": "ann1"}, timeout=30)
        assert nxt.status_code == 503 and "cannot be reached" in nxt.json()["detail"]
        own_postgres.start()
        # the spooled trace reaches the database; the save goes through and rewards both proposals
        traces = wait_for(lambda: (t := requests.get(f"{url}/seer/trace/ct_small", timeout=30)).status_code == 200
                          and t.json()["count"] == 2 and t.json(), what="the spooled trace")
        assert [t["target"]["name"] for t in traces["traces"]] == ["spleen", "liver"]
        saved = save_label(url, "ct_small", studies["label"], {"label_names": studies["names"]})
        assert saved.status_code == 200, saved.text
        wait_for(lambda: seer_info(url)["rewards"] == 2, what="two rewards")
    import sqlalchemy

    engine = sqlalchemy.create_engine(database)
    with engine.connect() as conn:
        kinds = [r[0] for r in conn.exec_driver_sql("SELECT kind FROM seer_trace_rows ORDER BY seq")]
    engine.dispose()
    assert kinds.count("trace") == 2 and kinds.count("reward") == 2
    spool = next(tmp_path.rglob("trace_spool.jsonl"))
    assert spool.read_bytes() == b""
