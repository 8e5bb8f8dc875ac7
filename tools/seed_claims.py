"""Seed reference/claims/ from shared/research/reference-numbers.csv for every setting a shipped protocol covers.

Each CSV row becomes its own claim (sources are never averaged). Existing claim files are left alone, so
the script can be rerun when new protocols are released. Usage: python tools/seed_claims.py [CSV]
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

from rd3kit.protocols import protocol_hash, released
from rd3kit.reference.store import Claim, Source, entry_path, save_entry

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "research" / "reference-numbers.csv"
DATASETS = {"CIFAR10": "cifar10", "CIFAR100": "cifar100", "TinyImageNet": "tinyimagenet", "MNIST": "mnist",
            "FashionMNIST": "fashion-mnist", "SVHN": "svhn", "ImageNet1K": "imagenet-1k"}
# MTT's ZCA flag per (dataset, ipc), protocols.md A.2 (DD-Ranking methods branch transcription).
MTT_ZCA = {("cifar10", 1): True, ("cifar10", 10): True, ("cifar10", 50): False, ("cifar100", 1): True,
           ("cifar100", 10): False, ("cifar100", 50): True, ("tinyimagenet", 1): False,
           ("tinyimagenet", 10): False, ("tinyimagenet", 50): False}


def protocol_for(row: dict) -> str | None:
    """The released protocol a CSV row was measured under, or None when no shipped protocol covers it."""
    ds, method, proto = DATASETS.get(row["dataset"]), row["method"], row["protocol"]
    if ds is None or not row["ipc"].isdigit():  # full-data rows ("full") are not distilled-set claims
        return None
    ipc = int(row["ipc"])
    if proto == "coupled_hard_DC" and method == "DC":
        return f"dc-{ds}@v1"
    if proto == "coupled_hard_DSA" and method in ("DSA", "DM"):
        return f"{method.lower()}-{ds}@v1"
    if proto.startswith("coupled_mtt") and method == "MTT" and (ds, ipc) in MTT_ZCA:
        return f"mtt-{ds}{'-zca' if MTT_ZCA[(ds, ipc)] else ''}@v1"
    if proto == "coupled_datm_softlabel" and method == "DATM":
        return f"datm-{ds}@v1"
    r18 = row["eval_arch"].startswith("ResNet-18")
    if proto == "decoupled_rd3_unified" and r18:
        return f"rd3-{ds}@v1"
    if proto == "decoupled_rded" and method == "RDED" and r18:
        return f"rded-{ds}@v1"
    # SRe2L's own ImageNet-1K recipe only: its CIFAR rows in S2/S6 come from other papers' re-runs.
    if proto == "decoupled_sre2l" and method == "SRe2L" and r18 and ds == "imagenet-1k":
        return f"sre2l-{ds}@v1"
    return None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def claim_from(row: dict, ref: str) -> Claim:
    protocol = released()[ref]
    arch_tag = "-cw128" if "CW128" in row["eval_arch"] else ""
    name = f"{slug(row['method'])}-{DATASETS[row['dataset']]}-ipc{row['ipc']}-{slug(protocol.id)}-v{protocol.version}-{slug(row['source_id'])}{arch_tag}"
    std = float(row["acc_std"]) / 100 if row["acc_std"].strip() else None
    return Claim(
        kind="claim", name=name, method=row["method"], dataset=DATASETS[row["dataset"]], ipc=int(row["ipc"]),
        arch=row["eval_arch"], protocol=ref, protocol_sha256=protocol_hash(protocol),
        mean=round(float(row["acc_mean"]) / 100, 6), std=None if std is None else round(std, 6), n=None,
        source=Source(id=row["source_id"], type=row["source_type"], citation=row["source"]),
        notes=f"reference-numbers.csv protocol column: {row['protocol']}. {row['notes']}".strip(),
    )


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else CSV
    table = released()
    written = skipped = uncovered = 0
    for row in csv.DictReader(path.open(encoding="utf-8")):
        ref = protocol_for(row)
        if ref is None or ref not in table:
            uncovered += 1
            continue
        claim = claim_from(row, ref)
        if entry_path(claim).exists():
            skipped += 1
            continue
        save_entry(claim)
        written += 1
    print(f"claims written {written}, already present {skipped}, rows no shipped protocol covers {uncovered}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
