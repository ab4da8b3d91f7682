"""The study-state database (seer.active_learning.study_state) on SQLite and on a real PostgreSQL server: studies, scores,
leases and who may end them, one lease per client, tiers of the hand-out, out-of-view studies strictly last, that
concurrent hand-outs never give one study to two clients, and that every call answers while many threads share one
SQLite database."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from seer.active_learning.scoring import MAX_SCORE, study_priority
from seer.active_learning.study_state import Release, ScoreRow, StudyState, lease_holder, split_holder
from seer.errors import SeerError


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("fresh_postgres")


def _row(study, request, score, out_of_view=0.0):
    return ScoreRow(study, request, 0, "r1", "b1", "img", 0.5, 0.5, out_of_view, 0.1, score, {"why": "test"})


def test_sync_adds_removes_flips_and_restamps(state_url):
    state = StudyState(state_url)
    assert state.sync_studies({"a": "1", "b": "1", "c": "1"}, labelled=["c"]) == {
        "added": 3, "removed": 0, "labelled": 0, "restamped": 0}
    assert set(state.unlabelled()) == {"a", "b"}
    state.save_scores("a", [_row("a", "liver", 2.0)], 2.0, "liver", True)
    # b labelled now, c's label deleted, a's image replaced, d new, nothing removed
    result = state.sync_studies({"a": "2", "b": "1", "c": "1", "d": "1"}, labelled=["b"])
    assert result == {"added": 1, "removed": 0, "labelled": 1, "restamped": 1}
    assert set(state.unlabelled()) == {"a", "c", "d"}
    assert state.study("a")["priority"] is None  # a changed image is scored again
    state.set_reward_counts({"a": 2, "zz": 1})
    assert state.study("a")["rewards"] == 2 and state.counts()["rewards"] == 2
    assert state.sync_studies({"a": "2"}, labelled=[])["removed"] == 3
    assert state.counts()["studies"] == 1
    state.close()


def test_hand_out_tiers_and_reasons(state_url):
    state = StudyState(state_url)
    state.sync_studies({f"s{i}": "1" for i in range(6)}, labelled=[])
    got = state.hand_out("A", 60)
    assert got.selection == "random" and got.priority is None
    assert state.release(got.study, "A") == Release.RELEASED
    state.set_in_view({"s1": True, "s2": False, "s3": False, "s4": False, "s5": False, "s0": False})
    got = state.hand_out("A", 60)
    assert (got.study, got.selection) == ("s1", "foreground-aware random")
    state.save_scores("s4", [_row("s4", "liver", 1.5), _row("s4", "spleen", 0.7)], 1.5, "liver", True)
    state.save_scores("s5", [_row("s5", "liver", 0.9)], 0.9, "liver", True)
    got = state.hand_out("B", 60)
    assert (got.study, got.selection, got.priority, got.request) == ("s4", "score", 1.5, "liver")
    assert [r.request for r in state.scores("s4")] == ["liver", "spleen"]
    assert state.scores("s4")[0].details == {"why": "test"}
    assert state.hand_out("B", 60).study == "s5"
    # out-of-view unscored studies come last, after the unknown ones (none left here)
    rest = {state.hand_out("C", 60).study for _ in range(3)}
    assert rest == {"s0", "s2", "s3"}
    assert state.hand_out("C", 60) is None
    assert state.counts()["leased"] == 6
    state.close()


def test_lease_blocks_others_until_expiry_save_or_release(state_url):
    state = StudyState(state_url)
    state.sync_studies({"x": "1", "y": "1"}, labelled=[])
    state.save_scores("x", [_row("x", "liver", 2.0)], 2.0, "liver", True)
    state.save_scores("y", [_row("y", "liver", 1.0)], 1.0, "liver", True)
    now = 1000.0
    assert state.hand_out("A", 60, now=now).study == "x"
    assert state.hand_out("B", 60, now=now + 1).study == "y"  # A holds x
    assert state.hand_out("C", 60, now=now + 2) is None
    assert state.hand_out("C", 60, now=now + 61).study == "x"  # A's lease expired
    assert state.release("x", "A", now=now + 62) == Release.NOT_HOLDER  # C holds it now
    assert state.release("x", "C", now=now + 62) == Release.RELEASED
    state.mark_labelled("y")  # B saved y: lease ends, y leaves the pool
    assert state.lease("y", now=now + 2) is None
    assert state.hand_out("D", 60, now=now + 62).study == "x"
    assert state.hand_out("E", 60, now=now + 62) is None
    state.close()


def test_concurrent_hand_outs_never_share_a_study(state_url):
    """20 clients on two separate engines (as two app servers would be) ask at once for 12 studies."""
    first, second = StudyState(state_url), StudyState(state_url)
    first.sync_studies({f"s{i:02d}": "1" for i in range(12)}, labelled=[])
    for i in range(6):
        first.save_scores(f"s{i:02d}", [_row(f"s{i:02d}", "liver", float(i))], float(i), "liver", True)
    results: dict[str, str | None] = {}
    barrier = threading.Barrier(20)

    def ask(client: int):
        state = first if client % 2 else second
        barrier.wait()
        got = state.hand_out(f"client{client}", 600)
        results[f"client{client}"] = got.study if got else None

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handed = [s for s in results.values() if s]
    assert len(handed) == 12 and len(set(handed)) == 12
    assert sum(1 for s in results.values() if s is None) == 8
    first.close()
    second.close()


def test_unopenable_database_is_one_sentence(tmp_path):
    with pytest.raises(SeerError) as err:
        StudyState("postgresql://nobody:secret@127.0.0.1:9/none")
    assert "cannot be opened" in err.value.message and "secret" not in err.value.message
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SeerError) as err:
        StudyState(f"sqlite:///{blocker / 'state.db'}")
    assert "state_db" in err.value.message


def test_a_lease_is_released_only_by_its_holder_or_an_admin(state_url):
    state = StudyState(state_url)
    state.sync_studies({"x": "1", "y": "1", "z": "1"}, labelled=[])
    alice, bob = lease_holder("anonymous", "alice"), lease_holder("anonymous", "bob")
    assert state.hand_out(alice, 600).study in {"x", "y", "z"}
    held = next(s for s in "xyz" if state.lease(s))
    # another client, or the same user without the client_id the lease was taken with: nothing changes
    assert state.release(held, bob) == Release.NOT_HOLDER
    assert state.release(held, lease_holder("anonymous")) == Release.NEEDS_CLIENT_ID
    assert state.release(held, lease_holder("mallory")) == Release.NOT_HOLDER  # another user, no client_id
    assert state.lease(held)["client_id"] == alice
    # the holder ends it; then there is nothing to release; an unknown study says so
    assert state.release(held, alice) == Release.RELEASED and state.lease(held) is None
    assert state.release(held, alice) == Release.NO_LEASE
    assert state.release("nope", alice) == Release.NO_STUDY
    # an admin ends anyone's lease; an expired lease is no lease
    got = state.hand_out(bob, 600)
    assert state.release(got.study, lease_holder("root"), admin=True) == Release.RELEASED
    got = state.hand_out(bob, 60, now=1000.0)
    assert state.release(got.study, bob, now=1061.0) == Release.NO_LEASE
    state.close()


def test_holder_keys_narrow_the_user_and_cannot_spell_another_user():
    assert lease_holder("ann") == "ann" and lease_holder("ann", "tab-2") == "ann/tab-2"
    assert lease_holder(None, "c") == "anonymous/c"
    assert lease_holder("a/b") != lease_holder("a", "b")  # a user named a/b is not user a's client b
    assert split_holder(lease_holder("a/b")) == ("a%2Fb", None)
    assert split_holder(lease_holder("ann", "x/y")) == ("ann", "x/y")


def test_one_lease_per_client_gives_back_the_skipped_study(state_url):
    state = StudyState(state_url)
    state.sync_studies({"a": "1", "b": "1", "c": "1"}, labelled=[])
    for study, score in (("a", 3.0), ("b", 2.0), ("c", 1.0)):
        state.save_scores(study, [_row(study, "liver", score)], score, "liver", True)
    first = state.hand_out("ann/1", 600, one_per_client=True)
    assert (first.study, first.given_back) == ("a", ())
    # ann skips a: asking again gives a back to the team, in the same transaction, and hands her b
    second = state.hand_out("ann/1", 600, one_per_client=True)
    assert (second.study, second.given_back) == ("b", ("a",))
    assert state.lease("a") is None and state.lease("b")["client_id"] == "ann/1"
    assert state.hand_out("bob/1", 600, one_per_client=True).study == "a"  # the skipped study is free for bob
    # another client of the same user keeps its own lease
    assert state.hand_out("ann/2", 600, one_per_client=True).study == "c"
    # nothing else free: the study given back is handed to its client again rather than nothing
    again = state.hand_out("ann/1", 600, one_per_client=True)
    assert (again.study, again.given_back) == ("b", ("b",))
    # without one_per_client a client may hold several
    state.release("c", "ann/2")
    assert state.hand_out("ann/1", 600).study == "c"
    assert {s for s in "abc" if (state.lease(s) or {}).get("client_id") == "ann/1"} == {"b", "c"}
    state.close()


def test_an_out_of_view_study_ranks_strictly_below_the_worst_in_view_study(state_url):
    worst_in_view = [_scored("zz", "liver", 0.0, out_of_view=0.0)]  # every part 0: the lowest in-view score
    best_out_of_view = [_scored("aa", "liver", MAX_SCORE, out_of_view=1.0),
                        _scored("aa", "spleen", MAX_SCORE, out_of_view=0.9)]
    low, low_request, low_in_view = study_priority(worst_in_view)
    high, high_request, high_in_view = study_priority(best_out_of_view)
    assert (low, low_request, low_in_view) == (0.0, "liver", True)
    assert not high_in_view and high < low
    # and the hand-out follows: the in-view study first, although the out-of-view one sorts first by id
    state = StudyState(state_url)
    state.sync_studies({"aa": "1", "zz": "1"}, labelled=[])
    state.save_scores("zz", worst_in_view, low, low_request, low_in_view)
    state.save_scores("aa", best_out_of_view, high, high_request, high_in_view)
    assert [state.hand_out("A", 60).study, state.hand_out("A", 60).study] == ["zz", "aa"]
    state.close()


def _scored(study, request, score, out_of_view):
    parts = {"disagreement": 0.0, "skill_gap": 0.0, "uncertainty": 0.0} if score == 0 else \
        {"disagreement": 1.0, "skill_gap": 1.0, "uncertainty": 1.0}
    return ScoreRow(study, request, 0, "r1", "b1", "img", parts["disagreement"], parts["skill_gap"], out_of_view,
                    parts["uncertainty"], score, {})


def test_every_call_answers_while_threads_share_one_sqlite_database(tmp_path):
    """Readers (counts behind /info, scores, study, lease, the pools) and writers (hand-outs, releases) on one
    SQLite state from 8 threads at once: no call may fail (a result read after its connection went back to the
    pool failed with "Cannot operate on a closed database" or "database is locked")."""
    state = StudyState(f"sqlite:///{tmp_path / 'state.db'}")
    studies = [f"s{i:03d}" for i in range(60)]
    state.sync_studies({s: "1" for s in studies}, labelled=[])
    for i, s in enumerate(studies[:30]):
        state.save_scores(s, [_row(s, "liver", i / 10)], i / 10, "liver", True)
    errors: Counter = Counter()
    answered = [0] * 8
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        holder = lease_holder("anonymous", f"c{n}")
        for k in range(120):
            study = studies[k % len(studies)]
            try:
                state.counts()
                state.scores(studies[k % 30])
                got = state.hand_out(holder, 60, one_per_client=bool(k % 2))
                state.study(study)
                state.lease(study)
                if got is not None:
                    assert state.release(got.study, holder) == Release.RELEASED
                state.unchecked()
                state.unlabelled()
                answered[n] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, dict(errors)
    assert answered == [120] * 8
    assert state.counts()["leased"] == 0
    state.close()


def test_client_ids_are_names_never_sql_paths_or_control_characters():
    from seer.active_learning.study_state import checked_client_id
    from seer.errors import SeerError

    for good in ("ann", "ann@radiology.example.org", "3f2b9c1e-8a4d-4e1b-9c2f-1a2b3c4d5e6f", 7, "a" * 128):
        assert checked_client_id(good) == str(good)
    assert checked_client_id(None) is None and checked_client_id("") is None
    for bad in ("x'; DROP TABLE seer_leases; --", "' OR '1'='1", "a" * 129, "a" * 10_000, "ann\nsecond", "ann\x00",
                "../ann", "ann/other", True, ["ann"], {"id": 1}):
        with pytest.raises(SeerError) as refused:
            checked_client_id(bad)
        assert refused.value.status == 422 and "is not a client id" in refused.value.message
