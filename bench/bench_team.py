"""A team on one server, in one run: off-loop serving (`infer_concurrency` at its default) against MONAI Label's
inline serving (`infer_concurrency 0`); `off-loop-1`, `off-loop-2` and `off-loop-4` pin the setting to compare
values. Offline reasoner, atlas backbone (sample brain atlases + the small abdominal CT as CT atlas), 2-core CPU.

Several servers: `pg-1` is one server with its state in PostgreSQL (Debian's server started here, fsync on),
`pg-2` two such servers on the same studies and database behind nginx with deploy/nginx-seer-label.conf; the
annotators and the monitor talk to nginx. Both share this machine's cores, so the ratio says what sharing state
costs, not what a second machine gains.

1. Load test, --seconds per mode on a fresh server: --annotators simulated annotators loop next-sample (strategy
   seer) -> infer (a request that fits the study) -> save the mask (tag `draft`, so the pool never empties) ->
   release the study; a monitor polls /info and next-sample every 0.5 s. p50/p95 of /info, next-sample (monitor)
   and infer (annotators), the number of inferences, and what was lost (trace rows and saved labels against
   successful calls).
2. Cold throughput: the first request on each of 4 studies sent at once, fresh server per mode: wall time until
   all four are back.

Every failure is counted and listed by kind: a call without an HTTP reply (connection error, timeout), a 5xx, an
/info that is not 200, and any other unexpected status of next-sample, save or release (an infer's 4xx is a
refusal, counted apart). The exit status is 1 when any call failed.

Run: python bench/bench_team.py [--seconds 120] [--annotators 8] [--modes off-loop,inline] [--repeats 1]
     [--no-cold]
     python bench/bench_team.py --modes pg-1,pg-2 --annotators 16 --no-cold
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import requests
from _util import REPO, SHARED_DATA, Server, need_sample_data, need_shared_data, save, table

sys.path.insert(0, str(REPO / "tests"))

# mode -> infer_concurrency (None: the server's default); off-loop-N pins N to compare values of the setting
MODES = {"off-loop": None, "inline": 0, "off-loop-1": 1, "off-loop-2": 2, "off-loop-4": 4, "pg-1": None, "pg-2": None}
SERVERS = {"pg-1": 1, "pg-2": 2}  # modes with their state in PostgreSQL: how many servers (2: behind nginx)
REQUESTS = {"ct_pelvis": ["liver", "left kidney", "spleen", "urinary bladder"],
            "ct_spleen": ["spleen"], "mr_small": ["liver", "right kidney"],
            "mni152_t1": ["left hippocampus", "brain"], "colin27_t1": ["right amygdala", "brain"]}


def studies_folder(root: Path) -> tuple[Path, Path]:
    shared, sample = need_shared_data(), need_sample_data()
    studies = root / "studies"
    studies.mkdir(parents=True)
    shutil.copy(shared / "ct-abdomen-pelvis" / "image.nii.gz", studies / "ct_pelvis.nii.gz")
    shutil.copy(shared / "ct-spleen" / "image.nii.gz", studies / "ct_spleen.nii.gz")
    shutil.copy(shared / "mr-abdomen-small" / "image.nii.gz", studies / "mr_small.nii.gz")
    shutil.copy(sample / "mni152_t1.nii.gz", studies / "mni152_t1.nii.gz")
    shutil.copy(sample / "colin27_t1.nii.gz", studies / "colin27_t1.nii.gz")
    atlases = root / "atlases"
    atlases.mkdir()
    (atlases / "ct-abdomen-small").symlink_to(SHARED_DATA / "ct-abdomen-small")
    return studies, atlases


class Calls:
    """Timings per endpoint and every failure, shared by the threads of one load test."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = {"info": [], "next": [], "infer": []}
        self.failures: Counter = Counter()  # "kind: endpoint detail" -> count
        self.counts = Counter()  # infers_ok, refused, saves, releases

    def call(self, endpoint: str, method, *args, ok=(200,), **kwargs) -> tuple[float, requests.Response | None]:
        """One HTTP call; a missing reply or an unexpected status is counted as a failure of `endpoint`."""
        started = time.perf_counter()
        try:
            reply = method(*args, **kwargs)
        except requests.RequestException as exc:
            seconds = time.perf_counter() - started
            self.fail(f"no reply: {endpoint} ({type(exc).__name__})")
            return seconds, None
        seconds = time.perf_counter() - started
        if reply.status_code >= 500:
            self.fail(f"5xx: {endpoint} {reply.status_code} {_detail(reply)}")
        elif reply.status_code not in ok:
            self.fail(f"{'failed /info' if endpoint == 'info' else 'unexpected'}: {endpoint} {reply.status_code} "
                      f"{_detail(reply)}")
        return seconds, reply

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures[what] += 1

    def add(self, endpoint: str, seconds: float) -> None:
        with self.lock:
            self.seconds[endpoint].append(seconds)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def _detail(reply: requests.Response) -> str:
    try:
        detail = reply.json().get("detail", "")
    except ValueError:
        detail = reply.text
    return str(detail)[:100]


def _json(reply: requests.Response | None) -> dict:
    try:
        value = reply.json() if reply is not None and reply.status_code == 200 else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _conf(atlases: Path, concurrency: int | None) -> dict:
    return {"atlases": atlases, **({} if concurrency is None else {"infer_concurrency": concurrency})}


@contextlib.contextmanager
def serving(root: Path, mode: str, studies: Path, conf: dict):
    """The URL annotators use, and a function counting the trace rows (all, answered) once the run is over: one
    server on files, or with state in PostgreSQL one server or several behind nginx."""
    count = SERVERS.get(mode, 0)
    if not count:
        with Server(studies, conf, root / f"{mode}.log") as server:
            yield server.url, lambda: _file_traces(studies), server.rss_mib
        return
    from load_balancer import Nginx
    from postgres import PostgresServer

    database = PostgresServer(root / "postgres", fsync=True).start()
    try:
        state = database.new_database()
        with contextlib.ExitStack() as stack:
            servers = [stack.enter_context(Server(studies, {**conf, "state_db": state}, root / f"{mode}-{n}.log"))
                       for n in range(count)]
            url = servers[0].url
            if count > 1:
                url = stack.enter_context(Nginx(root / "nginx", [s.url for s in servers])).url
            yield url, lambda: _database_traces(state), lambda: sum(s.rss_mib() for s in servers)
    finally:
        database.stop()


def _file_traces(studies: Path) -> list[dict]:
    rows = [json.loads(x) for x in (studies / ".seer" / "traces.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if r.get("type", "trace") == "trace"]


def _database_traces(url: str) -> list[dict]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = [json.loads(r[0]) for r in conn.exec_driver_sql("SELECT body FROM seer_trace_rows WHERE kind = 'trace'")]
    engine.dispose()
    return rows


def load_test(root: Path, mode: str, concurrency: int | None, seconds: float, annotators: int) -> dict:
    studies, atlases = studies_folder(root)
    calls = Calls()
    with serving(root, mode, studies, _conf(atlases, concurrency)) as (url, traces, rss_mib):
        stop = time.time() + seconds

        def annotator(n: int) -> None:
            rng = np.random.default_rng(n)
            client = f"a{n}"
            while time.time() < stop:
                try:
                    annotate_once(rng, client)
                except Exception as exc:  # noqa: BLE001 - a failure of the bench itself is a failure too
                    calls.fail(f"bench error: annotator {type(exc).__name__}: {exc}")

        def annotate_once(rng, client: str) -> None:
            _, reply = calls.call("next-sample", requests.post, f"{url}/activelearning/seer",
                                  json={"client_id": client}, timeout=600)
            leased = _json(reply).get("id")
            study = leased or str(rng.choice(list(REQUESTS)))
            prompt = str(rng.choice(REQUESTS[study]))
            took, reply = calls.call("infer", requests.post, f"{url}/infer/seer", params={"image": study, "output": "image"},
                                     data={"params": json.dumps({"prompt": prompt})}, timeout=900,
                                     ok=range(200, 500))
            if reply is not None and reply.status_code == 200:
                calls.add("infer", took)
                calls.count("infers_ok")
                _, saved = calls.call("save", requests.put, f"{url}/datastore/label",
                                      params={"image": study, "tag": "draft"},
                                      files={"label": ("label.nii.gz", reply.content)}, timeout=600)
                if saved is not None and saved.status_code == 200:
                    calls.count("saves")
            elif reply is not None and reply.status_code < 500:
                calls.count("refused")
            if leased:
                _, released = calls.call("release", requests.post, f"{url}/activelearning/seer/release",
                                         params={"image": leased, "client_id": client}, timeout=60)
                if released is not None and released.status_code == 200:
                    calls.count("releases")

        def monitor() -> None:
            while time.time() < stop:
                try:
                    took, reply = calls.call("info", requests.get, f"{url}/info/", timeout=600)
                    if reply is not None and reply.status_code == 200:
                        calls.add("info", took)
                    took, reply = calls.call("next-sample", requests.post, f"{url}/activelearning/seer",
                                             json={"client_id": "monitor"}, timeout=600)
                    if reply is not None and reply.status_code == 200:
                        calls.add("next", took)
                        if _json(reply).get("id"):
                            calls.call("release", requests.post, f"{url}/activelearning/seer/release",
                                       params={"image": _json(reply)["id"], "client_id": "monitor"}, timeout=60)
                except Exception as exc:  # noqa: BLE001
                    calls.fail(f"bench error: monitor {type(exc).__name__}: {exc}")
                time.sleep(0.5)

        threads = [threading.Thread(target=annotator, args=(n,)) for n in range(annotators)]
        threads.append(threading.Thread(target=monitor))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rss = rss_mib()
        traced = traces()
    drafts = studies / "labels" / "draft"
    return {**calls.seconds, **{k: calls.counts[k] for k in ("infers_ok", "refused", "saves", "releases")},
            "failures": dict(calls.failures), "rss_mib": rss, "traced": len(traced),
            "traced_ok": sum(1 for r in traced if not r.get("refused")),
            "drafts_on_disk": len(list(drafts.glob("*"))) if drafts.exists() else 0}


def cold_throughput(root: Path, mode: str, concurrency: int) -> dict:
    studies, atlases = studies_folder(root)
    picks = [("ct_pelvis", "liver"), ("mr_small", "liver"), ("mni152_t1", "left hippocampus"),
             ("colin27_t1", "right amygdala")]
    calls = Calls()
    with Server(studies, _conf(atlases, concurrency), root / f"cold-{mode}.log") as server:
        started = time.perf_counter()
        threads = [threading.Thread(target=calls.call, args=("infer", requests.post, f"{server.url}/infer/seer"),
                                    kwargs={"params": {"image": s, "output": "json"},
                                            "data": {"params": json.dumps({"prompt": p})}, "timeout": 900})
                   for s, p in picks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"seconds": time.perf_counter() - started, "failures": dict(calls.failures)}


def pct(values, q) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}" if values else "-"


def ratio(on: list[float], off: list[float]) -> str:
    return f"{np.percentile(on, 95) / np.percentile(off, 95):.3f}x" if on and off else "-"


def paired(runs: list[tuple[str, int, dict]], first: str, second: str):
    """(run, first mode's result, second mode's result) for each run that measured both modes."""
    for run in sorted({r for _, r, _ in runs}):
        mine = {m: s for m, r, s in runs if r == run}
        if first in mine and second in mine:
            yield run, mine[first], mine[second]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="load-test duration per mode and run (120)")
    parser.add_argument("--annotators", type=int, default=8, help="simulated annotators (8)")
    parser.add_argument("--modes", default="off-loop,inline",
                        help="comma-separated: off-loop, inline, off-loop-1, off-loop-2, off-loop-4, pg-1, pg-2 "
                             "(off-loop,inline)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternating modes (1)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-throughput part")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes takes {', '.join(MODES)}")
    if args.repeats < 1 or args.annotators < 1 or args.seconds <= 0:
        parser.error("--repeats and --annotators must be at least 1, --seconds more than 0")
    root = Path(tempfile.mkdtemp(prefix="bench-team-"))
    runs: list[tuple[str, int, dict]] = []
    for run in range(1, args.repeats + 1):
        for mode in modes:
            shown = "default" if MODES[mode] is None else MODES[mode]
            print(f"load test {run}/{args.repeats}, {mode} (infer_concurrency {shown}), {args.seconds:g} s, "
                  f"{args.annotators} annotators ...", flush=True)
            runs.append((mode, run, load_test(root / f"{mode}-{run}", mode, MODES[mode], args.seconds,
                                              args.annotators)))
    rows = []
    for mode, run, s in runs:
        rows.append({"serving": mode, "run": run, "/info p50 ms": pct(s["info"], 50), "/info p95 ms": pct(s["info"], 95),
                     "next p50 ms": pct(s["next"], 50), "next p95 ms": pct(s["next"], 95),
                     "infer p50 ms": pct(s["infer"], 50), "infer p95 ms": pct(s["infer"], 95),
                     "infers": s["infers_ok"], "refused": s["refused"], "failures": sum(s["failures"].values()),
                     "traced ok": s["traced_ok"], "saves": s["saves"], "RSS MiB": f"{s['rss_mib']:.0f}"})
    print(table(rows, list(rows[0])))
    for run, two, one in paired(runs, "pg-2", "pg-1"):
        print(f"run {run}: two servers behind nginx / one server, both on PostgreSQL: inferences "
              f"{two['infers_ok'] / max(1, one['infers_ok']):.2f}x; /info p95 {ratio(two['info'], one['info'])}; "
              f"next-sample p95 {ratio(two['next'], one['next'])}; infer p95 {ratio(two['infer'], one['infer'])}")
    for run, on, off in paired(runs, "off-loop", "inline"):
        print(f"run {run}: /info p95 {ratio(on['info'], off['info'])} inline; next-sample p95 "
              f"{ratio(on['next'], off['next'])} inline; inferences done "
              f"{on['infers_ok'] / max(1, off['infers_ok']):.2f}x inline")
    failed = 0
    for mode, run, s in runs:
        lost = s["infers_ok"] - s["traced_ok"]
        total = sum(s["failures"].values())
        failed += total
        print(f"{mode} run {run}: {s['infers_ok']} inferences answered, {s['traced_ok']} in the trace log (lost "
              f"{lost}); {s['saves']} saves, {s['releases']} releases answered; {total} failures")
        for what, n in sorted(s["failures"].items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {n} x {what}")
    cold = {}
    if not args.no_cold:
        cold = {mode: cold_throughput(root / f"cold-{mode}", mode, MODES[mode]) for mode in modes if mode not in SERVERS}
        print("cold, 4 studies at once: " + ", ".join(f"{m} {c['seconds']:.1f} s" for m, c in cold.items()))
        for mode, c in cold.items():
            failed += sum(c["failures"].values())
            for what, n in sorted(c["failures"].items()):
                print(f"  cold {mode}: {n} x {what}")
    save("bench_team", {"runs": [{"mode": m, "run": r, **s} for m, r, s in runs], "cold": cold,
                        "seconds": args.seconds, "annotators": args.annotators})
    print(f"failures in all: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
