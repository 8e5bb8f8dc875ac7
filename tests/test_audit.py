"""The audit matrix on the embedded digits with a 2-epoch protocol variant: arms, seeds, cache reuse,
scores, soft-label handling, and the `rd3kit audit` command on a throwaway app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from rd3kit import api
from rd3kit import audit as au
from rd3kit.embedded import digits_split, digits_subset
from rd3kit.errors import DataError
from rd3kit.metrics import ddranking as dd
from rd3kit.protocols import canonical_json, get_protocol, protocol_hash
from rd3kit.protocols.spec import LabelSpec
from rd3kit.sources.formats import DistilledSet


def _tiny(augment: bool = True):
    """coupled-digits@v1 cut to 2 epochs (+1 as DC's loop) and 2 seeds; DSA from dsa-cifar10@v1 if `augment`."""
    base = get_protocol("coupled-digits@v1")
    changes = {"epochs": 2, "run_epochs": 3, "seeds": (0, 1),
               "schedule": base.schedule.model_copy(update={"milestones": (1,)})}
    if augment:
        changes["augmentation"] = get_protocol("dsa-cifar10@v1").augmentation
    return au.variant(base, **changes)


@pytest.fixture(scope="module")
def splits():
    return digits_split("train"), digits_split("test")


@pytest.fixture(scope="module")
def first_audit(tmp_path_factory, splits):
    train, test = splits
    runtime = api.Runtime(cache_dir=tmp_path_factory.mktemp("runs"), progress=False)
    spec = au.AuditSpec(w=0.5, g=0.5, full=au.FullReference((0.95, 0.97), "test value"))
    dset = digits_subset("random", 2, 7)
    return dset, runtime, spec, au.audit(dset, _tiny(), test, train, spec, runtime)


def test_variants_rehash_and_keep_types():
    protocol = _tiny()
    found = au.variants(protocol)
    assert found["protocol"] is protocol and found["hard"] is protocol
    assert found["noaug"].augmentation.name == "none" and found["noaug"].model.width == protocol.model.width
    assert len({protocol_hash(p) for p in (protocol, found["noaug"])}) == 2
    assert "noaug" not in au.variants(_tiny(augment=False))


def test_audit_runs_every_arm_with_its_seeds(first_audit):
    _, _, _, record = first_audit
    arms = record["arms"]
    assert set(arms) == {"syn", "syn_hard", "rand", "syn_noaug", "rand_noaug", "herding", "kcenter", "full"}
    for name in ("syn", "rand", "syn_noaug", "rand_noaug", "herding", "kcenter"):
        assert arms[name]["seeds"] == [0, 1] and all(0.0 <= v <= 1.0 for v in arms[name]["top1"])
    assert arms["syn_hard"]["same_as"] == "syn"
    # Selection seed = training seed; the no-aug arm trains under the re-hashed variant.
    assert arms["rand"]["inputs"] == ["digits-random-ipc2-seed0.json", "digits-random-ipc2-seed1.json"]
    assert arms["rand_noaug"]["protocol_sha256"] == record["variants"]["noaug"]["sha256"]
    assert record["variants"]["noaug"]["augmentation"] == "none" and record["set"]["ipc"] == 2


def test_audit_scores_follow_the_arms(first_audit):
    _, _, _, record = first_audit
    arms, scores = record["arms"], record["scores"]
    mean = lambda k: sum(arms[k]["top1"]) / len(arms[k]["top1"])  # noqa: E731
    assert scores["ior"]["point"] == pytest.approx(mean("syn") - mean("rand"))
    want = dd.lrs(dd.hlr(0.96, mean("syn")), dd.ior(mean("syn"), mean("rand")), w=0.5)
    assert scores["lrs"]["point"] == pytest.approx(want)
    for name in ("hlr", "ior", "lrs", "ars"):
        assert scores[name]["low"] <= scores[name]["point"] <= scores[name]["high"]
    assert set(scores["gain_over"]) == {"herding", "kcenter"}
    compat = scores["ddranking_0_2_0_percent_variant"]
    assert "unit bug" in compat["note"] and set(compat) == {"note", "lrs", "ars"}
    json.dumps(record)  # the record is plain JSON


def test_second_audit_costs_nothing(first_audit, splits):
    dset, runtime, spec, record = first_audit
    again = au.audit(dset, _tiny(), splits[1], splits[0], spec, runtime)
    for name, arm in again["arms"].items():
        if name != "full":
            assert arm["cached"] == len(arm["seeds"]), name
            assert arm["top1"] == record["arms"][name]["top1"]


def test_without_full_reference_or_augmentation(splits, tmp_path):
    runtime = api.Runtime(cache_dir=tmp_path, progress=False)
    spec = au.AuditSpec(w=0.5, g=0.5, seeds=(0,), baselines=())
    record = au.audit(digits_subset("random", 1, 3), _tiny(augment=False), splits[1], splits[0], spec, runtime)
    assert set(record["arms"]) == {"syn", "syn_hard", "rand"}
    assert "full-data" in record["scores"]["hlr"] and "no augmentation" in record["scores"]["ars"]


def test_soft_label_protocol_trains_subsets_hard(splits, tmp_path):
    protocol = au.variant(_tiny(augment=False), labels=LabelSpec(kind="soft_logits", loss="soft_cross_entropy"))
    base = digits_subset("random", 1, 4)
    logits = torch.nn.functional.one_hot(base.labels, 10).float() * 5.0
    dset = DistilledSet(base.images, logits, "raw01", None, {"soft-test": "0" * 64}, "soft test set")
    spec = au.AuditSpec(w=0.5, g=0.5, seeds=(0,), baselines=())
    record = au.audit(dset, protocol, splits[1], splits[0], spec, api.Runtime(cache_dir=tmp_path, progress=False))
    arms = record["arms"]
    assert arms["syn"]["protocol"] == "protocol" and arms["syn_hard"]["protocol"] == "hard"
    assert arms["rand"]["protocol"] == "hard" and "same_as" not in arms["syn_hard"]
    assert any("hard labels" in n for n in record["notes"])


def _app() -> typer.Typer:
    from rd3kit.cli_audit import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # keeps `audit` a named subcommand, as in the real app
        pass

    return app


def _claim(root: Path, protocol_file: Path) -> None:
    protocol = get_protocol(str(protocol_file))
    (root / "claims").mkdir(parents=True)
    claim = {"kind": "claim", "name": "digits-full-test", "method": "full", "dataset": "digits", "ipc": 0,
             "arch": "convnet", "protocol": protocol.ref, "protocol_sha256": protocol_hash(protocol), "mean": 0.96,
             "std": 0.01, "n": 5, "source": {"id": "T", "type": "test", "citation": "made up for a test"}}
    (root / "claims" / "digits-full-test.json").write_text(json.dumps(claim))


def test_audit_arms_run_on_the_chosen_engine_and_record_it(splits, tmp_path):
    from rd3kit.train.compiled import ENGINE

    spec = au.AuditSpec(w=0.5, g=0.5, seeds=(0,), baselines=())
    dset, proto = digits_subset("random", 1, 3), _tiny(augment=False)
    compiled = au.audit(dset, proto, splits[1], splits[0], spec,
                        api.Runtime(cache_dir=tmp_path / "c", progress=False, engine="compiled"))
    eager = au.audit(dset, proto, splits[1], splits[0], spec, api.Runtime(cache_dir=tmp_path / "e", progress=False))
    for name in ("syn", "syn_hard", "rand"):
        assert compiled["arms"][name]["engine"] == ENGINE and eager["arms"][name]["engine"] == api.PER_SEED
        assert compiled["arms"][name]["top1"] == pytest.approx(eager["arms"][name]["top1"], abs=1 / 360)


def test_multiseed_audit_trains_the_set_and_its_random_subsets_side_by_side(splits, tmp_path, monkeypatch):
    """Issue 8: an audit's distilled-set and random-subset runs in one stacked pass (the CUDA policy is forced
    here: on CPU a pass holds one run), each equal to its one-by-one value within float order."""
    from rd3kit.train import multiseed as ms

    monkeypatch.setattr(ms, "seeds_per_pass", lambda *_: 8)
    passes, real = [], ms.train_runs
    monkeypatch.setattr(ms, "train_runs", lambda protocol, runs, *a, **k: passes.append(
        [(r.origin, r.seed) for r in runs]) or real(protocol, runs, *a, **k))
    spec = au.AuditSpec(w=0.5, g=0.5, seeds=(0, 1), baselines=())
    dset, proto = digits_subset("random", 1, 3), _tiny()  # augmented: the no-augmentation arms exist too
    stacked = au.audit(dset, proto, splits[1], splits[0], spec,
                       api.Runtime(cache_dir=tmp_path / "m", progress=False, engine="multiseed"))
    eager = au.audit(dset, proto, splits[1], splits[0], spec, api.Runtime(cache_dir=tmp_path / "e", progress=False))
    rand = stacked["arms"]["rand"]["inputs"]
    assert len(passes) == 2 and passes[0][:2] == [(dset.origin, 0), (dset.origin, 1)]  # syn + rand, noaug likewise
    assert [seed for _, seed in passes[0][2:]] == [0, 1] and len(set(rand)) == 2
    for name in ("syn", "rand", "syn_noaug", "rand_noaug"):
        assert stacked["arms"][name]["engine"] == ms.ENGINE
        assert stacked["arms"][name]["top1"] == pytest.approx(eager["arms"][name]["top1"], abs=1 / 360)


def test_full_run_trains_on_an_unbalanced_train_split(splits, tmp_path):
    """The digits train split has 133-154 images per class: the full-data arm takes it as it is (a distilled set
    of unequal IPC is still refused)."""
    train, test = splits
    counts = torch.bincount(train.labels)
    assert counts.min() != counts.max()
    spec = au.AuditSpec(w=0.5, g=0.5, seeds=(0,), baselines=(), run_full=True)
    result = au.audit(digits_subset("random", 1, 3), _tiny(augment=False), test, train, spec,
                      api.Runtime(cache_dir=tmp_path, progress=False))
    assert result["arms"]["full"]["seeds"] == [0] and result["arms"]["full"]["mean"] > 0.5
    uneven = DistilledSet(train.images[:11].float() / 255, torch.tensor([*range(10), 0]), "raw01")
    with pytest.raises(DataError, match="IPC is not constant across classes \\(min 1, max 2\\)"):
        api.check_set(uneven, _tiny())


def test_cli_audit_renders_arms_and_scores(tmp_path, monkeypatch):
    proto_file = tmp_path / "tiny.json"
    proto_file.write_text(canonical_json(_tiny().model_dump(mode="json")))
    _claim(tmp_path / "ref", proto_file)
    monkeypatch.setenv("RD3KIT_REFERENCE", str(tmp_path / "ref"))
    args = ["audit", "embedded:digits/random/ipc1/seed5", "--protocol", str(proto_file), "--seeds", "0",
            "--baselines", "herding", "--full-ref", "digits-full-test", "--cache-dir", str(tmp_path / "runs")]
    res = CliRunner().invoke(_app(), args + ["--out", str(tmp_path / "audit.json")])
    assert res.exit_code == 0, res.output
    for text in ("syn", "rand", "herding", "LRS", "ARS", "unit bug", "seeds [0]", "single value"):
        assert text in res.output, text
    record = json.loads((tmp_path / "audit.json").read_text())
    assert record["arms"]["full"]["top1"] == [0.96] and record["schema"] == au.SCHEMA
    both = CliRunner().invoke(_app(), args + ["--full-run"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = CliRunner().invoke(_app(), args[:-4] + ["--baselines", "forgetting"])
    assert bad.exit_code == 2


def test_identical_subsets_share_their_run_identity(splits):
    train = splits[0]
    herd = au.subset_set(train, au.baseline_selection("herding", train, 1, None), None)
    kcen = au.subset_set(train, au.baseline_selection("kcenter", train, 1, None), None)
    # Both start at the image closest to each class mean: same images, so the same cached runs.
    assert torch.equal(herd.images, kcen.images) and list(herd.files.values()) == list(kcen.files.values())
    other_lr = au.subset_set(train, au.baseline_selection("herding", train, 1, None), 0.03)
    assert list(other_lr.files.values()) != list(herd.files.values())


# --- audit protocols ------------------------------------------------------------------------------------------


def _audit_doc(**changes) -> dict:
    doc = get_protocol("ddranking-dc-cifar10@v1").model_dump(mode="json")
    doc.update(changes)
    return doc


def test_released_audit_protocol_states_everything_and_pins_its_evaluation():
    from rd3kit.protocols.audit import AuditProtocol

    ap = get_protocol("ddranking-dc-cifar10@v1")
    assert isinstance(ap, AuditProtocol)
    assert (ap.scores.w, ap.scores.g, ap.seeds, ap.arms.baselines) == (0.5, 0.5, (0, 1, 2, 3, 4), ("herding", "kcenter"))
    spec = au.from_protocol(ap)
    assert (spec.w, spec.g, spec.seeds, spec.level, spec.n_boot, spec.boot_seed) == (0.5, 0.5, (0, 1, 2, 3, 4), 0.95,
                                                                                      2000, 0)
    assert spec.full.top1 == (0.848,) and "DATM" in spec.full.source and not spec.run_full
    assert spec.origin == {"ref": ap.ref, "sha256": protocol_hash(ap)}
    assert au.evaluation_of(ap) is get_protocol("dc-cifar10@v1")


def test_audit_protocol_rejects_a_stale_pin_and_bad_fields():
    from rd3kit.errors import ConfigError
    from rd3kit.protocols import parse_protocol

    stale = parse_protocol(json.dumps(_audit_doc(evaluation_sha256="0" * 64)), "stale.json")
    with pytest.raises(ConfigError, match="pinned sha256 000000000000"):
        au.evaluation_of(stale)
    with pytest.raises(ConfigError, match=r"bad\.json: invalid protocol: scores\.w"):
        parse_protocol(json.dumps(_audit_doc(scores={"w": 1.5, "g": 0.5})), "bad.json")
    with pytest.raises(ConfigError, match=r"scores\.temperature: Extra inputs"):
        parse_protocol(json.dumps(_audit_doc(scores={"w": 0.5, "g": 0.5, "temperature": 1.0})), "bad.json")
    full = {"source": "published", "top1": None, "citation": None}
    with pytest.raises(ConfigError, match="citation are required"):
        parse_protocol(json.dumps(_audit_doc(arms=dict(_audit_doc()["arms"], full=full))), "bad.json")
    changed = parse_protocol(json.dumps(_audit_doc(scores={"w": 0.3, "g": 0.5})), "w.json")
    assert protocol_hash(changed) != protocol_hash(get_protocol("ddranking-dc-cifar10@v1"))


def test_spec_from_an_audit_protocol_scores_with_its_weights_and_is_recorded(first_audit, splits):
    from rd3kit.protocols import parse_protocol

    dset, runtime, _, record = first_audit
    doc = _audit_doc(scores={"w": 0.25, "g": 0.5}, seeds=[0, 1],
                     interval={"method": "percentile-bootstrap-per-arm", "level": 0.9, "n_boot": 500, "seed": 3})
    doc["arms"] = dict(doc["arms"], full={"source": "published", "top1": [0.95, 0.97], "citation": "test value"})
    ap = parse_protocol(json.dumps(doc), "test audit protocol")
    again = au.audit(dset, _tiny(), splits[1], splits[0], au.from_protocol(ap), runtime)  # every run is cached
    assert again["audit_protocol"] == {"ref": ap.ref, "sha256": protocol_hash(ap)}
    assert not any(n.startswith("AD-HOC") for n in again["notes"])
    assert record["audit_protocol"] is None and record["notes"][0].startswith("AD-HOC")
    sc, arms = again["scores"], again["arms"]
    mean = lambda k: sum(arms[k]["top1"]) / len(arms[k]["top1"])  # noqa: E731
    assert sc["w"] == 0.25 and sc["lrs"]["level"] == 0.9 and "500 resamples, seed 3" in sc["lrs"]["method"]
    want = dd.lrs(dd.hlr(0.96, mean("syn_hard")), dd.ior(mean("syn"), mean("rand")), w=0.25)
    assert sc["lrs"]["point"] == pytest.approx(want)


def test_cli_refuses_score_options_with_an_audit_protocol():
    base = ["audit", "embedded:digits/random/ipc1/seed5", "--protocol", "ddranking-dc-cifar10@v1"]
    for extra in (["--w", "0.3"], ["--g", "0.7"], ["--seeds", "0"], ["--full-run"], ["--baselines", "herding"]):
        res = CliRunner().invoke(_app(), base + extra)
        assert res.exit_code == 2, (extra, res.output)
        assert "fixes seeds, baselines, A_full, w and g" in res.output and "dc-cifar10@v1" in res.output
