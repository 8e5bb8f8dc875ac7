"""Draft the v1 protocol files from the facts in shared/research/protocols.md (section A).

Run once to release; it refuses to overwrite an existing file, because released protocols never change.
A changed protocol is written by hand as a new version file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "rd3kit" / "protocols" / "released"

# DC repo get_dataset constants; MTT/DATM map CIFAR-100 to the CIFAR-10 constants (protocols.md F.1).
DATA = {
    "mnist": dict(num_classes=10, channels=1, image_size=[28, 28], mean=[0.1307], std=[0.3081]),
    "fashion-mnist": dict(num_classes=10, channels=1, image_size=[28, 28], mean=[0.2861], std=[0.353]),
    "svhn": dict(num_classes=10, channels=3, image_size=[32, 32], mean=[0.4377, 0.4438, 0.4728],
                 std=[0.198, 0.201, 0.197]),
    "cifar10": dict(num_classes=10, channels=3, image_size=[32, 32], mean=[0.4914, 0.4822, 0.4465],
                    std=[0.2023, 0.1994, 0.201]),
    "cifar100": dict(num_classes=100, channels=3, image_size=[32, 32], mean=[0.5071, 0.4866, 0.4409],
                     std=[0.2673, 0.2564, 0.2762]),
    "tinyimagenet": dict(num_classes=200, channels=3, image_size=[64, 64], mean=[0.485, 0.456, 0.406],
                         std=[0.229, 0.224, 0.225]),
}
DSA_PARAMS = dict(brightness=1.0, saturation=2.0, contrast=0.5, crop_pad=0.125, cutout=0.5, flip_p=0.5,
                  scale=1.2, rotate_deg=15.0)
DIGITS = {"mnist", "svhn"}
DC_SRC = "VICO-UoE/DatasetCondensation@53f63a67 utils.py evaluate_synset/get_daparam, main.py"


def data(name: str, zca: bool = False, constants_of: str | None = None) -> dict:
    spec = dict(DATA[name])
    if constants_of:
        spec["mean"], spec["std"] = DATA[constants_of]["mean"], DATA[constants_of]["std"]
    return {"name": name, **spec, "zca": {"eps": 0.1, "fit_on": "train"} if zca else None, "test_split": "test"}


def convnet(name: str) -> dict:
    return {"arch": "convnet", "width": 128, "depth": 4 if name == "tinyimagenet" else 3,
            "norm": "instancenorm", "act": "relu", "pool": "avgpool"}


def dsa(name: str) -> dict:
    strategy = ["color", "crop", "cutout", "flip", "scale", "rotate"]
    if name in DIGITS:  # the DSA README drops flip for digits
        strategy.remove("flip")
    return {"name": "dsa", "strategy": strategy, "mode": "single", "siamese": False, "align_corners": False,
            "params": DSA_PARAMS}


def protocol(pid: str, kind: str, description: str, source: str, name: str, *, epochs: int, batch: int,
             aug: dict, seeds: int, zca: bool = False, constants_of: str | None = None,
             lr_source: str = "protocol", labels: str = "hard") -> dict:
    return {
        "id": pid, "version": 1, "family": "coupled", "kind": kind, "description": description, "source": source,
        "data": data(name, zca, constants_of), "model": convnet(name),
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "lr_source": lr_source},
        # DC's loop runs E+1 epochs and decays once after epoch index E//2+1, re-creating SGD.
        "schedule": {"name": "step", "milestones": [epochs // 2 + 1], "gamma": 0.1, "reset_optimizer": True},
        "epochs": epochs, "run_epochs": epochs + 1, "batch_size": batch, "test_batch_size": 256,
        "augmentation": aug,
        "labels": {"kind": labels, "loss": "cross_entropy" if labels == "hard" else "soft_cross_entropy"},
        "seeds": list(range(seeds)), "metric": "top1_final_epoch",
    }


def drafts() -> list[dict]:
    out = []
    for name in ["mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"]:
        if name == "mnist":  # get_daparam: DC augmentation only for MNIST, which moves E to 1000
            aug = {"name": "dc", "strategy": ["crop", "scale", "rotate"], "crop": 4, "scale": 0.2, "rotate": 45,
                   "noise": 0.001}
            epochs, how = 1000, "DC's own augmentation (crop/scale/rotate), 1000 epochs"
        else:
            aug, epochs, how = {"name": "none"}, 300, "no augmentation, 300 epochs"
        out.append(protocol(f"dc-{name}", "paper-faithful",
                            f"DC (Zhao et al., ICLR'21) evaluation of ConvNet-3 on {name}: {how}, batch 256, "
                            "SGD 0.01 decayed x0.1 once, final-epoch test accuracy.",
                            DC_SRC, name, epochs=epochs, batch=256, aug=aug, seeds=10))
    for method in ["dsa", "dm"]:
        names = ["mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"] + (["tinyimagenet"] if method == "dm" else [])
        for name in names:
            out.append(protocol(f"{method}-{name}", "paper-faithful",
                                f"{method.upper()} evaluation on {name}: DSA augmentation (one family per batch, "
                                "per-sample parameters), 1000 epochs, batch 256, SGD 0.01, final epoch.",
                                DC_SRC + ("; main_DM.py" if method == "dm" else ""), name, epochs=1000, batch=256,
                                aug=dsa(name), seeds=10))
    mtt_src = "GeorgeCazenavette/mtt-distillation@50dccea4 utils.py evaluate_synset; ZCA per setting (DD-Ranking methods branch)"
    for name, zca in [("cifar10", True), ("cifar10", False), ("cifar100", True), ("cifar100", False),
                      ("tinyimagenet", False)]:
        suffix = "-zca" if zca else ""
        out.append(protocol(f"mtt-{name}{suffix}", "paper-faithful",
                            f"MTT evaluation on {name}{' in ZCA space (kornia, eps 0.1, fit on full train)' if zca else ''}: "
                            "learned lr from the artifact (falls back to 0.01, flagged), DSA, 1000 epochs, batch 256. "
                            "CIFAR-100 uses the CIFAR-10 mean/std as MTT's code does.",
                            mtt_src, name, epochs=1000, batch=256, aug=dsa(name), seeds=10, zca=zca,
                            constants_of="cifar10" if name == "cifar100" else None,
                            lr_source="artifact_else_protocol"))
    for name in ["cifar10", "cifar100", "tinyimagenet"]:
        out.append(protocol(f"datm-{name}", "paper-faithful",
                            f"DATM evaluation on {name}: learned soft logits with soft cross-entropy, learned lr "
                            "(lr_best.pt), ZCA, DSA, 1000 epochs, batch 128.",
                            "NUS-HPC-AI-Lab/DATM@97ae5109 distill/evaluation.py, configs/*/ConvIN/IPC*.yaml", name,
                            epochs=1000, batch=128, aug=dsa(name), seeds=10, zca=True,
                            constants_of="cifar10" if name == "cifar100" else None,
                            lr_source="artifact", labels="soft_logits"))
    for name in ["mnist", "fashion-mnist", "svhn", "cifar10", "cifar100", "tinyimagenet"]:
        for zca in ([False, True] if name in ("cifar10", "cifar100", "tinyimagenet") else [False]):
            suffix = "-zca" if zca else ""
            out.append(protocol(f"coupled-{name}{suffix}", "canonical",
                                f"Canonical coupled protocol for {name}{' in ZCA space' if zca else ''}: hard labels, "
                                "fixed lr 0.01 (no learned lr, no search), DSA, 1000 epochs, batch 256, 5 fixed seeds, "
                                "final-epoch accuracy. Comparable across methods; not any paper's protocol.",
                                "rd3kit canonical (protocols.md A.6 draft)", name, epochs=1000, batch=256,
                                aug=dsa(name), seeds=5, zca=zca))
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for spec in drafts():
        path = OUT / f"{spec['id']}@v{spec['version']}.json"
        if path.exists():
            print(f"exists, left as released: {path.name}", file=sys.stderr)
            continue
        path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
