"""Agreement between two reads of a 512x512x100 CT: the time from a submitted read to its agreement figures.

The study is the TotalSegmentator abdomen-pelvis CT and its label map resampled (linear for the image, nearest for
the label) onto a 512x512x100 grid; the second read is the same label with the liver moved 3 voxels and the left
kidney eroded by one voxel. Two measures:
- the agreement itself (`seer.review.agreement.read_agreement`: MONAI Dice and mean surface distance per structure,
  all structures of the map), median of --rounds calls;
- on the real server (`--conf review true --conf reads_per_study 2`, offline reasoner, atlas backbone, rewards
  off): `PUT /datastore/label` of the second annotator's read, whose reply carries the agreement figures, against
  the same PUT on a study nobody else read (no agreement to compute), taking turns, in one run.

Run: python bench/bench_agreement.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests
from _util import Server, need_shared_data, save, table


def resampled(shared: Path, folder: Path) -> tuple[Path, Path, Path, dict]:
    """(image, first read, second read, label_names) on a 512x512x100 grid."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    source = shared / "ct-abdomen-pelvis"
    image = nib.load(str(source / "image.nii.gz"))
    label = nib.load(str(source / "labels.nii.gz"))
    shape = (512, 512, 100)
    zoom = [n / o for n, o in zip(shape, image.shape, strict=True)]
    affine = image.affine.copy()
    affine[:3, :3] = image.affine[:3, :3] / np.array(zoom)
    pixels = ndimage.zoom(np.asarray(image.dataobj, np.float32), zoom, order=1).astype(np.int16)
    first = ndimage.zoom(np.asarray(label.dataobj, np.uint8), zoom, order=0)
    names = {name: int(value) for value, name in json.loads((source / "labels.json").read_text()).items()
             if int(value) in set(np.unique(first).tolist()) - {0}}
    second = first.copy()
    liver = second == names["liver"]
    second[liver] = 0
    second[np.roll(liver, 3, axis=0) & (second == 0)] = names["liver"]
    kidney = second == names["kidney_left"]
    second[kidney & ~ndimage.binary_erosion(kidney)] = 0
    paths = folder / "ct_512.nii.gz", folder.parent / "first.nii.gz", folder.parent / "second.nii.gz"
    nib.save(nib.Nifti1Image(pixels, affine), str(paths[0]))
    nib.save(nib.Nifti1Image(first, affine), str(paths[1]))
    nib.save(nib.Nifti1Image(second, affine), str(paths[2]))
    return *paths, names


def put(url: str, study: str, label: Path, params: dict) -> tuple[float, dict]:
    with open(label, "rb") as fp:
        started = time.perf_counter()
        reply = requests.put(f"{url}/datastore/label", params={"image": study, "tag": "final"},
                             data={"params": json.dumps(params)}, files={"label": ("label.nii.gz", fp)}, timeout=600)
        seconds = time.perf_counter() - started
    if reply.status_code != 200:
        raise SystemExit(f"PUT failed: {reply.status_code} {reply.text[:300]}")
    return seconds, reply.json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="saves of each kind (5)")
    args = parser.parse_args()
    shared = need_shared_data()
    from seer.review.agreement import read_agreement

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        studies = root / "studies"
        studies.mkdir()
        image, first, second, names = resampled(shared, studies)
        (studies / "ct_512_solo.nii.gz").symlink_to(image)
        direct = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            figures = read_agreement(first, names, second, names)
            direct.append(time.perf_counter() - started)
        atlases = root / "atlases"
        atlases.mkdir()
        (atlases / "ct-abdomen-pelvis").symlink_to(shared / "ct-abdomen-pelvis")
        conf = {"atlases": atlases, "review": "true", "reads_per_study": "2", "rewards": "false"}
        with_pair, alone = [], []
        with Server(studies, conf, root / "server.log", timeout_s=300) as server:
            params = {"label_names": names}
            put(server.url, "ct_512", first, {**params, "client_id": "alice"})
            put(server.url, "ct_512_solo", first, {**params, "client_id": "carol"})  # warm both paths once
            for i in range(args.rounds):
                order = ("pair", "alone") if i % 2 == 0 else ("alone", "pair")
                for kind in order:
                    if kind == "pair":
                        seconds, reply = put(server.url, "ct_512", second, {**params, "client_id": "bob"})
                        if len(reply.get("agreement") or []) != 1:
                            raise SystemExit(f"no agreement in the reply: {str(reply)[:300]}")
                        with_pair.append(seconds)
                    else:
                        seconds, reply = put(server.url, "ct_512_solo", second, {**params, "client_id": "carol"})
                        alone.append(seconds)
    worst = min(figures["structures"].items(), key=lambda item: item[1]["dice"])
    rows = [{"measure": "read_agreement (core)", "structures": len(figures["structures"]),
             "median_s": statistics.median(direct), "ratio": None},
            {"measure": "PUT, no other read", "structures": 0, "median_s": statistics.median(alone), "ratio": 1.0},
            {"measure": "PUT, agreement in reply", "structures": len(figures["structures"]),
             "median_s": statistics.median(with_pair), "ratio": statistics.median(with_pair) / statistics.median(alone)}]
    print(table(rows, ["measure", "structures", "median_s", "ratio"]))
    print(f"worst structure: {worst[0]} Dice {worst[1]['dice']} MSD {worst[1]['msd_mm']} mm; mean Dice "
          f"{figures['mean_dice']}")
    save("agreement", {"rows": rows, "direct_s": direct, "pair_s": with_pair, "alone_s": alone,
                       "figures": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
