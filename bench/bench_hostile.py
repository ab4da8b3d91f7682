"""Hostile input against the real server as figures, and the DICOMweb proxy's overhead.

Two servers: one over a folder of the sample brains (MNI152, Colin27), one over a real Orthanc holding the CT
series (../shared/data/dicom-ct-series). Every input of tests/hostile.py is sent (proxy escapes in every encoding,
path-like ids for paths that exist and paths that do not, malformed and oversized uploads, SQL-shaped and 10 kB
client ids), then a burst of 1,000 next-sample calls from one client. Prints, per group: inputs tried, accepted
(2xx; goal 0), 5xx (goal 0), bytes of state changed (labels, trace log, leases and labelled flags, PACS
instances; goal 0); and the server's RSS and thread count before and after the burst.

Proxy overhead: one WADO-RS frame of the CT series fetched through `/proxy/dicom/wado/...` against the same frame
fetched from Orthanc's DICOMweb directly, alternated, in the same run (goal: at most 1.1x the median).

  python bench/bench_hostile.py [--frames 200] [--proxy-only]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from _util import REPO, SHARED_DATA, Server, need_sample_data, save, table

sys.path.insert(0, str(REPO / "tests"))
from hostile import (  # noqa: E402
    changed_bytes,
    client_ids,
    labels_for,
    next_sample_burst,
    path_ids,
    proxy_escapes,
    release_all,
    seg_with_segments,
    send,
    settle,
    state_digest,
    uploads,
)
from pacs import Orthanc, orthanc_binary  # noqa: E402


def run_group(url: str, name: str, items, digest) -> dict:
    before = digest()
    accepted = errors = 0
    for item in items:
        status = send(url, item).status
        accepted += 200 <= status < 300
        errors += status >= 500
    return {"group": name, "inputs": len(items), "accepted": accepted, "5xx": errors,
            "state_bytes_changed": changed_bytes(before, digest())}


def folder_figures(work: Path) -> tuple[list[dict], dict]:
    sample = need_sample_data()
    studies = work / "studies"
    studies.mkdir()
    for name in ("mni152_t1.nii.gz", "colin27_t1.nii.gz"):
        shutil.copy(sample / name, studies / name)
    labels = labels_for(studies / "mni152_t1.nii.gz")
    rows = []
    with Server(studies, {}, work / "folder.log") as server:
        settle(server.url)

        def digest():
            return state_digest(studies, studies / ".seer")

        existing = [str(studies / "mni152_t1.nii.gz"), "/etc/passwd", "sample-data/mni152_t1.nii.gz"]
        missing = [str(studies / "nope.nii.gz"), "/etc/no-such-file", "sample-data/nope.nii.gz"]
        rows.append(run_group(server.url, "path-like study ids (folder)",
                              [item for _k, _p, item in path_ids(existing, missing, labels["good"])], digest))
        rows.append(run_group(server.url, "malformed uploads (folder)",
                              uploads("mni152_t1", labels, seg_with_segments(10_000)), digest))
        rows.append(run_group(server.url, "client ids", client_ids(), digest))
        before = digest()
        session = requests.Session()
        rss0, threads0 = server.rss_mib(), _threads(server.pid)
        start = time.perf_counter()
        statuses, leased = next_sample_burst(session, server.url, "burst", 1000)
        seconds = time.perf_counter() - start
        time.sleep(1.0)
        rss1, threads1 = server.rss_mib(), _threads(server.pid)
        release_all(session, server.url, "burst", leased)
        burst = {"calls": 1000, "statuses": statuses, "seconds": round(seconds, 2), "rss_before_mib": round(rss0, 1),
                 "rss_after_mib": round(rss1, 1), "threads_before": threads0, "threads_after": threads1,
                 "studies_leased": len(leased), "state_bytes_changed_after_release": changed_bytes(before, digest())}
    return rows, burst


def pacs_figures(work: Path, frames: int, hostile: bool = True) -> tuple[list[dict], dict]:
    files = sorted((SHARED_DATA / "dicom-ct-series").glob("*.dcm"))
    if not files or orthanc_binary() is None:
        raise SystemExit("the PACS half needs Orthanc (apt-get install orthanc orthanc-dicomweb) and "
                         f"{SHARED_DATA / 'dicom-ct-series'}")
    pacs = Orthanc(work / "orthanc").start()
    try:
        pacs.upload(files)
        series = requests.get(f"{pacs.dicomweb}/series", timeout=30).json()[0]
        uid, study = series["0020000E"]["Value"][0], series["0020000D"]["Value"][0]
        atlases = work / "atlases"
        atlases.mkdir()
        (atlases / "ct-abdomen-small").symlink_to(SHARED_DATA / "ct-abdomen-small")
        env = {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(work / "cache")}
        with Server(pacs.dicomweb, {"atlases": atlases, "store_seg": "true"}, work / "pacs.log", env=env) as server:
            if not hostile:
                return [], proxy_overhead(server.url, pacs.dicomweb, study, uid, frames)
            image = work / "ct.nii.gz"
            image.write_bytes(requests.get(f"{server.url}/datastore/image", params={"image": uid}, timeout=600).content)
            labels = labels_for(image)

            def digest():
                instances = sorted(requests.get(f"{pacs.url}/instances", timeout=30).json())
                return state_digest(work / "cache", work / "cache", {"pacs instances": instances})

            rows = [run_group(server.url, "proxy escapes (Orthanc)", proxy_escapes(), digest),
                    run_group(server.url, "path-like ids (PACS datastore)",
                              [item for _k, _p, item in path_ids([str(image)], ["/etc/no-such-file"], labels["good"])],
                              digest),
                    run_group(server.url, "malformed uploads (PACS datastore)",
                              uploads(uid, labels, seg_with_segments(10_000)), digest)]
            overhead = proxy_overhead(server.url, pacs.dicomweb, study, uid, frames)
    finally:
        pacs.stop()
    return rows, overhead


def proxy_overhead(url: str, dicomweb: str, study: str, series: str, frames: int) -> dict:
    """Median time of one WADO-RS frame through the proxy and straight from the PACS, alternated."""
    sops = [row["00080018"]["Value"][0] for row in requests.get(
        f"{dicomweb}/studies/{study}/series/{series}/instances", timeout=30).json()]
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    session = requests.Session()
    times: dict[str, list[float]] = {"proxy": [], "direct": []}
    for n in range(frames):
        path = f"studies/{study}/series/{series}/instances/{sops[n % len(sops)]}/frames/1"
        for kind, base in (("proxy", f"{url}/proxy/dicom/wado"), ("direct", dicomweb)):
            start = time.perf_counter()
            reply = session.get(f"{base}/{path}", headers=accept, timeout=60)
            times[kind].append(time.perf_counter() - start)
            assert reply.status_code == 200, (kind, reply.status_code)
    proxy, direct = statistics.median(times["proxy"]), statistics.median(times["direct"])
    return {"frames": frames, "proxy_median_ms": round(proxy * 1000, 2), "direct_median_ms": round(direct * 1000, 2),
            "ratio": round(proxy / direct, 2)}


def _threads(pid: int) -> int:
    import psutil

    return psutil.Process(pid).num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames fetched each way for the proxy overhead")
    parser.add_argument("--proxy-only", action="store_true", help="only the proxy overhead (no hostile input)")
    args = parser.parse_args()
    if args.proxy_only:
        with tempfile.TemporaryDirectory(prefix="seer-hostile-") as tmp:
            overhead = pacs_figures(Path(tmp), args.frames, hostile=False)[1]
        print(f"proxy overhead, one WADO-RS frame ({overhead['frames']} each way, alternated): proxy "
              f"{overhead['proxy_median_ms']} ms, direct {overhead['direct_median_ms']} ms, ratio {overhead['ratio']}x")
        return
    with tempfile.TemporaryDirectory(prefix="seer-hostile-") as tmp:
        work = Path(tmp)
        (work / "folder").mkdir()
        (work / "pacs").mkdir()
        rows, burst = folder_figures(work / "folder")
        pacs_rows, overhead = pacs_figures(work / "pacs", args.frames)
    rows += pacs_rows
    total = {"group": "all", **{k: sum(r[k] for r in rows) for k in ("inputs", "accepted", "5xx", "state_bytes_changed")}}
    print(table([*rows, total], ["group", "inputs", "accepted", "5xx", "state_bytes_changed"]))
    print(f"\nburst of {burst['calls']} next-sample calls from one client in {burst['seconds']} s: replies "
          f"{burst['statuses']}; RSS {burst['rss_before_mib']} -> {burst['rss_after_mib']} MiB; threads "
          f"{burst['threads_before']} -> {burst['threads_after']}; studies leased {burst['studies_leased']}; state "
          f"bytes changed after releasing them: {burst['state_bytes_changed_after_release']}")
    print(f"proxy overhead, one WADO-RS frame ({overhead['frames']} each way, alternated): proxy "
          f"{overhead['proxy_median_ms']} ms, direct {overhead['direct_median_ms']} ms, ratio {overhead['ratio']}x "
          "(goal <= 1.1x)")
    print(f"saved {save('hostile', {'groups': [*rows, total], 'burst': burst, 'proxy_overhead': overhead})}")


if __name__ == "__main__":
    main()
