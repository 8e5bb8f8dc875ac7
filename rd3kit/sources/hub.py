"""The only module that talks to the network: pinned Hub pulls checked against a kit-owned lock, hf:// URIs, pushes.

Must not: trust the Hub cache (every use re-hashes every file against the lock), load a dataset by repo id and
revision through `datasets` (offline it silently ignores the revision), or print, log or record a token.
The endpoint is always passed explicitly to the client, so HF_ENDPOINT's import-time read cannot bite.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from rd3kit.errors import ConfigError, DataError, redact
from rd3kit.record import now, read_json, write_json
from rd3kit.sources.formats import DistilledSet, sha256_file

DEFAULT_ENDPOINT = "https://huggingface.co"
LOCK_SCHEMA = "rd3kit.hub-lock/v1"
PUSH_SCHEMA = "rd3kit.hub-push/v1"
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
REPO_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Exception class names (anywhere in the MRO) that mean "the Hub could not be reached"; matched by name so
# the check holds across huggingface_hub's HTTP backends (requests, httpx, httpx2).
_UNREACHABLE = {"TransportError", "TimeoutException", "ConnectionError", "OfflineModeIsEnabled"}


@dataclass(frozen=True)
class HubConfig:
    """Where the Hub is and where the kit keeps its state. Holds no token (see `_token`)."""

    endpoint: str = DEFAULT_ENDPOINT
    home: Path = Path.home() / ".cache" / "rd3kit"
    cache_dir: Path | None = None  # Hugging Face cache; None = the library's default ($HF_HUB_CACHE)
    offline: bool = False

    @classmethod
    def from_env(cls, home: Path | None = None, offline: bool | None = None) -> "HubConfig":
        """$HF_ENDPOINT, $RD3KIT_HOME (default ~/.cache/rd3kit), offline if asked or $HF_HUB_OFFLINE is set."""
        env_offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        return cls(
            endpoint=os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"),
            home=home or Path(os.environ.get("RD3KIT_HOME", Path.home() / ".cache" / "rd3kit")),
            cache_dir=Path(os.environ["RD3KIT_HF_CACHE"]) if os.environ.get("RD3KIT_HF_CACHE") else None,
            offline=env_offline if offline is None else offline,
        )


@dataclass(frozen=True)
class Snapshot:
    """A pulled, verified revision: `files` maps repo path -> sha256, all re-hashed on this use."""

    repo: str
    revision: str
    commit: str
    directory: Path
    files: dict[str, str]
    lock_path: Path
    resolved_via: str  # "commit" | "hub" | "lock (offline: the ref as recorded at an earlier pull)"

    def uri(self, path: str = "") -> str:
        return f"hf://datasets/{self.repo}@{self.commit}" + (f"/{path}" if path else "")


@dataclass(frozen=True)
class HubRef:
    repo: str
    revision: str | None
    path: str


def parse_uri(text: str) -> HubRef:
    """Parse `hf://[datasets/]NS/NAME[@REV][/PATH]` or `NS/NAME[@REV]` (REV may be %-quoted, e.g. refs%2Fpr%2F1)."""
    body = text[len("hf://"):] if text.startswith("hf://") else text
    body = body[len("datasets/"):] if body.startswith("datasets/") else body
    parts = body.split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"{text!r}: expected hf://NS/NAME[@REV][/PATH] or NS/NAME[@REV]")
    name, _, rev = parts[1].partition("@")
    repo = f"{parts[0]}/{name}"
    if not REPO_RE.fullmatch(repo):
        raise ConfigError(f"{text!r}: {repo!r} is not a Hub repo id (NS/NAME)")
    return HubRef(repo, unquote(rev) or None, parts[2] if len(parts) == 3 else "")


# -- locks ------------------------------------------------------------------------------------------
def _repo_dir(config: HubConfig, repo: str) -> Path:
    return config.home / "locks" / "datasets" / repo


def lock_path(config: HubConfig, repo: str, commit: str) -> Path:
    return _repo_dir(config, repo) / f"{commit}.json"


def read_lock(config: HubConfig, repo: str, commit: str) -> dict | None:
    """The lock of `repo@commit`, or None if this kit never pulled it."""
    path = lock_path(config, repo, commit)
    if not path.exists():
        return None
    lock = read_json(path)
    if lock.get("schema") != LOCK_SCHEMA or lock.get("commit") != commit or lock.get("repo") != repo:
        raise DataError(f"{path}: not a {LOCK_SCHEMA} lock for {repo}@{commit}; delete it and pull again online")
    return lock


def verify(lock: dict, directory: Path, paths: list[str]) -> dict[str, str]:
    """Hash each of `paths` under `directory` and compare size and sha256 with the lock; returns path -> sha256."""
    out = {}
    for rel in paths:
        want, path = lock["files"][rel], directory / rel
        where = f"{lock['repo']}@{lock['commit']}: {rel}"
        if not path.exists():
            raise DataError(f"{where}: missing from the cache ({path}); pull again online to restore it")
        size = path.stat().st_size
        if size != want["size"]:
            raise DataError(f"{where}: {size} bytes, the lock says {want['size']} (truncated or altered cached copy "
                            f"{path.resolve()}); delete it and run `rd3kit pull {lock['repo']}@{lock['commit']}`")
        digest = sha256_file(path)
        if digest != want["sha256"]:
            raise DataError(f"{where}: sha256 {digest[:12]}..., the lock says {want['sha256'][:12]}... (altered cached "
                            f"copy {path.resolve()}); delete it and run `rd3kit pull {lock['repo']}@{lock['commit']}`")
        out[rel] = digest
    return out


# -- pulls ------------------------------------------------------------------------------------------
def pull(repo: str, revision: str | None = None, *, files: list[str] | None = None,
         config: HubConfig | None = None) -> Snapshot:
    """Resolve `revision` to its commit, download (or reuse the cache), verify against the lock, return the snapshot.

    `files` are paths or glob patterns inside the repo (default: the whole repo). The first pull of a file checks
    it against the Hub's own record (git blob sha1, or LFS sha256) and adds it to the lock; every later pull,
    online or offline, re-hashes it against the lock.
    """
    config = config or HubConfig.from_env()
    if not REPO_RE.fullmatch(repo):
        raise ConfigError(f"{repo!r} is not a Hub repo id (NS/NAME)")
    revision = revision or "main"
    commit, via = _resolve_commit(repo, revision, config)
    lock = read_lock(config, repo, commit)
    directory = _download(repo, revision, commit, files, config, locked=lock is not None, reached=via == "hub")
    wanted = _select(directory, files)
    if files and not wanted:
        raise DataError(f"{repo}@{commit}: no file matches {files}; list the repo's files on the Hub and fix the path")
    lock = lock or {"schema": LOCK_SCHEMA, "repo": repo, "repo_type": "dataset", "commit": commit, "files": {}}
    missing = sorted(p for p in lock["files"] if _matches(p, files) and p not in wanted)
    if missing:
        raise DataError(f"{repo}@{commit}: {missing[0]} is in the lock but not in the cache; pull again online")
    new = [p for p in wanted if p not in lock["files"]]
    if new:
        lock = _add_to_lock(lock, directory, new, config)
    digests = verify(lock, directory, sorted(wanted))
    if via == "hub":
        _record_ref(config, repo, revision, commit)
    return Snapshot(repo, revision, commit, directory, digests, lock_path(config, repo, commit), via)


def _resolve_commit(repo: str, revision: str, config: HubConfig) -> tuple[str, str]:
    if COMMIT_RE.fullmatch(revision):
        return revision, "commit"
    if not config.offline:
        try:
            return _api(config).dataset_info(repo, revision=revision).sha, "hub"
        except Exception as exc:  # noqa: BLE001 - sorted into clear messages below
            if not _unreachable(exc):
                raise _hub_error(exc, repo, revision) from None
    recorded = _refs(config, repo).get(revision)
    if recorded is None:
        raise _unavailable(repo, revision, config, "its commit is unknown (never pulled here)")
    return recorded["commit"], "lock (offline: the ref as recorded at an earlier pull)"


def _download(repo: str, revision: str, commit: str, files: list[str] | None, config: HubConfig,
              locked: bool, reached: bool) -> Path:
    """Cache first when this commit is already locked (zero requests), else probe the Hub, then download."""
    if locked or config.offline:
        try:
            return _snapshot(repo, commit, files, config, local_only=True)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if config.offline or type(exc).__name__ not in ("LocalEntryNotFoundError", "IncompleteSnapshotError"):
                raise _download_error(exc, repo, revision, commit, config) from None
    if not reached:  # one quick request: the download itself retries with backoff for ~25 s when the Hub is down
        try:
            _api(config).dataset_info(repo, revision=commit)
        except Exception as exc:  # noqa: BLE001 - sorted below
            raise _download_error(exc, repo, revision, commit, config) from None
    try:
        return _snapshot(repo, commit, files, config, local_only=False)
    except Exception as exc:  # noqa: BLE001 - sorted below
        raise _download_error(exc, repo, revision, commit, config) from None


def _snapshot(repo: str, commit: str, files: list[str] | None, config: HubConfig, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, repo_type="dataset", revision=commit, cache_dir=config.cache_dir,
                                  endpoint=config.endpoint, allow_patterns=files, local_files_only=local_only))


def _download_error(exc: BaseException, repo: str, revision: str, commit: str, config: HubConfig) -> DataError:
    name = type(exc).__name__
    if name in ("LocalEntryNotFoundError", "IncompleteSnapshotError") or _unreachable(exc):
        return _unavailable(repo, revision, config, f"commit {commit[:12]} is not fully in the cache")
    return _hub_error(exc, repo, revision)


def _select(directory: Path, patterns: list[str] | None) -> list[str]:
    found = [p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() or p.is_symlink()]
    return sorted(p for p in found if _matches(p, patterns))


def _matches(path: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatch(path, pat) for pat in patterns)


def _add_to_lock(lock: dict, directory: Path, new: list[str], config: HubConfig) -> dict:
    """Check newly downloaded files against the Hub's tree listing, then write them into the lock."""
    if config.offline:
        raise DataError(f"{lock['repo']}@{lock['commit']}: {new[0]} is cached but was never checked by rd3kit; "
                        "pull once online so that it can be checked against the Hub and locked")
    from huggingface_hub import RepoFile

    tree = {f.path: f for f in _api(config).list_repo_tree(
        lock["repo"], revision=lock["commit"], recursive=True, repo_type="dataset") if isinstance(f, RepoFile)}
    files = dict(lock["files"])
    for rel in new:
        path, remote = directory / rel, tree.get(rel)
        data_sha256, blob_sha1 = _hashes(path)
        expected = (remote.lfs.sha256 if remote.lfs else remote.blob_id) if remote else None
        if remote is None or expected not in (data_sha256, blob_sha1) or path.stat().st_size != remote.size:
            raise DataError(f"{lock['repo']}@{lock['commit']}: downloaded {rel} does not match the Hub's record "
                            f"(expected {expected}); delete {path.resolve()} and pull again")
        files[rel] = {"size": path.stat().st_size, "sha256": data_sha256}
    lock = lock | {"files": dict(sorted(files.items()))}
    write_json(lock_path(config, lock["repo"], lock["commit"]), lock)
    return lock


def _hashes(path: Path) -> tuple[str, str]:
    """sha256 of the bytes and git's blob sha1 (what the Hub reports for non-LFS files)."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            sha256.update(block)
            sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


def _refs(config: HubConfig, repo: str) -> dict:
    path = _repo_dir(config, repo) / "refs.json"
    return read_json(path) if path.exists() else {}


def _record_ref(config: HubConfig, repo: str, revision: str, commit: str) -> None:
    refs = _refs(config, repo)
    if refs.get(revision, {}).get("commit") != commit:
        write_json(_repo_dir(config, repo) / "refs.json", refs | {revision: {"commit": commit, "resolved_at": now()}})


# -- errors -----------------------------------------------------------------------------------------
def _unreachable(exc: BaseException) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return any(k.__name__ in _UNREACHABLE for k in type(exc).__mro__) or (status is not None and status >= 500)


def _unavailable(repo: str, revision: str, config: HubConfig, why: str) -> DataError:
    mode = "offline mode is on" if config.offline else f"the Hub at {config.endpoint} cannot be reached"
    return DataError(f"{repo}@{revision}: {why}, and {mode}. Connect to the network and run "
                     f"`rd3kit pull {repo}@{revision}`, or pass a local path to the files instead.")


def _hub_error(exc: BaseException, repo: str, revision: str) -> DataError:
    name = type(exc).__name__
    if name == "RevisionNotFoundError":
        return DataError(f"{repo}: revision {revision!r} not found (no such branch, tag or commit); "
                         "check the name or use a 40-hex commit")
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return DataError(f"{repo}: dataset repo not found, or private/gated (log in with `hf auth login` or set HF_TOKEN)")
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return DataError(f"{repo}@{revision}: a requested file does not exist at that revision")
    first = (str(exc).splitlines() or [""])[0]
    return DataError(f"{repo}@{revision}: Hub request failed ({name}: {scrub(first)})")


def _token() -> str | None:
    """$HF_TOKEN, else the token saved by `hf auth login`. Never printed, logged or written."""
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


scrub = redact  # kept under its old name for callers of this module


def _api(config: HubConfig, token: str | bool | None = None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=config.endpoint, token=token)


# -- loading ------------------------------------------------------------------------------------------
_META_FILES = ("README.md", ".gitattributes")


def resolve(target: str, space: str | None = None, select: int | None = None, idc_factor: int | None = None,
            config: HubConfig | None = None) -> DistilledSet:
    """Load a catalogue name or an `hf://REPO@REV/PATH` URI as a verified DistilledSet."""
    from rd3kit.catalog import get_entry

    config = config or HubConfig.from_env()
    if not target.startswith("hf://"):
        return load_entry(get_entry(target), space=space, select=select, config=config)
    ref = parse_uri(target)
    snap = pull(ref.repo, ref.revision, files=[ref.path, f"{ref.path}/*"] if ref.path else None, config=config)
    space = space or _stated_space(snap, config)
    if space is None:
        raise ConfigError(f"{target}: no rd3kit card states the set's space; pass --space (raw01, normalized or zca)")
    return load_snapshot(snap, ref.path, space=space, select=select, idc_factor=idc_factor)


def load_entry(entry, space: str | None = None, select: int | None = None,
               config: HubConfig | None = None) -> DistilledSet:
    """Load a catalogue entry: a local file checked against its sha256, or a pinned, verified Hub pull."""
    from rd3kit.catalog import local_path
    from rd3kit.sources.images import load_any

    if space is not None and space != entry.space:
        raise ConfigError(f"catalogue entry {entry.name} is in the {entry.space} space; drop --space {space}")
    select = entry.select if select is None else select
    if entry.local is not None:
        path = local_path(entry)
        dset = load_any(path, space=entry.space, select=select, fmt=entry.format, idc_factor=entry.idc_factor)
        return DistilledSet(dset.images, dset.labels, dset.space, dset.lr, dset.files, f"catalog:{entry.name}")
    hub = entry.hub
    snap = pull(hub.repo, hub.commit or hub.revision, files=list(hub.files), config=config)
    path = hub.files[0] if len(hub.files) == 1 and "*" not in hub.files[0] else ""
    return load_snapshot(snap, path, space=entry.space, select=select, fmt=entry.format,
                         idc_factor=entry.idc_factor, classes=None)


def load_snapshot(snap: Snapshot, path: str, *, space: str, select: int | None = None, fmt: str | None = None,
                  idc_factor: int | None = None, classes: list[str] | None = None) -> DistilledSet:
    """Read `path` (file or folder; "" = the data files) from a verified snapshot; provenance names the commit."""
    from rd3kit.sources.images import load_any

    if not path:
        path = "data" if (snap.directory / "data").is_dir() else ""
    target = snap.directory / path if path else snap.directory
    dset = load_any(target, space=space, select=select, fmt=fmt, idc_factor=idc_factor, classes=classes)
    used = {snap.uri(rel): h for rel, h in snap.files.items()
            if rel not in _META_FILES and (not path or rel == path or rel.startswith(path.rstrip("/") + "/"))}
    return DistilledSet(dset.images, dset.labels, dset.space, dset.lr, used, snap.uri(path))


def _stated_space(snap: Snapshot, config: HubConfig) -> str | None:
    """The `rd3kit.space` of the commit's dataset card (written by `push`), if the card can be had."""
    try:
        card = pull(snap.repo, snap.commit, files=["README.md"], config=config)
    except DataError:
        return None  # no card, or offline without it: the caller asks for --space
    meta = read_card(card.directory / "README.md")
    return (meta.get("rd3kit") or {}).get("space") if meta else None


def read_card(readme: Path) -> dict | None:
    """The YAML front matter of a dataset card file (None if absent)."""
    return read_card_text(readme.read_text(encoding="utf-8"), str(readme)) if readme.exists() else None


def read_card_text(text: str, where: str = "README.md") -> dict | None:
    """The YAML front matter of a dataset card's text (None if it has none)."""
    import yaml

    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError) as exc:
        raise DataError(f"{where}: dataset card front matter is not valid YAML ({exc})") from None
    return meta if isinstance(meta, dict) else None


# -- pushes -----------------------------------------------------------------------------------------
def push(dset: DistilledSet, repo: str, card: dict, *, fmt: str = "safetensors", tag: str | None = None,
         private: bool = False, config: HubConfig | None = None) -> dict:
    """Upload `dset` in a Hub-native form with its dataset card; returns the push record (with the commit oid).

    `card` is the card metadata from `build_card` (format in docs/hub.md). The record is also written under
    $RD3KIT_HOME/pushes/datasets/REPO/COMMIT.json; the token is part of neither.
    """
    from rd3kit.sources.images import write_parquet, write_safetensors

    config = config or HubConfig.from_env()
    if not REPO_RE.fullmatch(repo):
        raise ConfigError(f"{repo!r} is not a Hub repo id (NS/NAME)")
    token = _token()
    if not token:
        raise ConfigError("no Hub token: set HF_TOKEN or run `hf auth login` (the token is never stored by rd3kit)")
    stage = Path(tempfile.mkdtemp(prefix="rd3kit-push-"))
    try:
        (stage / "data").mkdir()
        if fmt == "parquet":
            write_parquet(dset, stage / "data" / "train-00000-of-00001.parquet")
        elif fmt == "safetensors":
            write_safetensors(dset, stage / "data" / "set.safetensors")
        else:
            raise ConfigError(f"--format must be safetensors or parquet, got {fmt!r}")
        files = {p.relative_to(stage).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted((stage / "data").iterdir())}
        meta = card | {"rd3kit": card["rd3kit"] | {"format": fmt, "files": {k: v["sha256"] for k, v in files.items()}}}
        if fmt == "parquet":
            meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
        (stage / "README.md").write_text(card_text(meta, repo), encoding="utf-8")
        oid = _upload(stage, repo, token, tag, private, config)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    record = {"schema": PUSH_SCHEMA, "repo": repo, "repo_type": "dataset", "commit": oid, "tag": tag,
              "endpoint": config.endpoint, "created": now(), "files": files, "card": meta["rd3kit"]}
    write_json(config.home / "pushes" / "datasets" / repo / f"{oid}.json", record)
    return record


def _upload(stage: Path, repo: str, token: str, tag: str | None, private: bool, config: HubConfig) -> str:
    api = _api(config, token)
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=stage,
                                 commit_message="rd3kit push: distilled set and card")
        if tag:
            api.create_tag(repo, repo_type="dataset", tag=tag, revision=info.oid)
    except Exception as exc:  # noqa: BLE001 - every client failure becomes a short DataError
        if _unreachable(exc):
            raise DataError(f"push to {repo}: the Hub at {config.endpoint} cannot be reached; retry when online") from None
        first = (str(exc).splitlines() or [""])[0]
        raise DataError(f"push to {repo} failed ({type(exc).__name__}: {scrub(first, token)})") from None
    return info.oid


def build_card(dset: DistilledSet, *, method: str, dataset: str, ipc: int | None, protocol: str | None,
               license_id: str, claims: list[dict] | None = None) -> dict:
    """Card metadata in the Hub's conventions plus the machine-readable `rd3kit:` block (see docs/hub.md)."""
    import rd3kit
    from rd3kit.protocols import get_protocol, protocol_hash
    from rd3kit.record import git_sha

    measured = _ipc(dset)
    if ipc is not None and measured is not None and ipc != measured:
        raise ConfigError(f"--ipc {ipc} but the set holds {measured} images per class")
    proto = None
    if protocol:
        spec = get_protocol(protocol)
        if spec.data.name != dataset:
            raise ConfigError(f"--protocol {protocol} evaluates {spec.data.name}, but --dataset is {dataset}")
        proto = {"ref": spec.ref, "sha256": protocol_hash(spec)}
    block = {
        "schema": "rd3kit.card/v1", "method": method, "source_dataset": dataset, "ipc": ipc or measured,
        "num_images": int(dset.images.shape[0]), "image_shape": list(dset.images.shape[1:]), "space": dset.space,
        "label_type": "soft_logits" if dset.soft else "hard", "learned_lr": dset.lr, "protocol": proto,
        "claims": list(claims or []), "source_files": {Path(k).name: v for k, v in dset.files.items()},
        "produced_by": {"rd3kit": rd3kit.__version__, "git_sha": git_sha()},
    }
    tags = ["dataset-distillation", "rd3kit", method.lower(), dataset]
    return {"license": license_id, "task_categories": ["image-classification"], "tags": tags,
            "pretty_name": f"{method} distilled {dataset} (IPC {block['ipc']})", "rd3kit": block}


def _ipc(dset: DistilledSet) -> int | None:
    import torch

    counts = torch.bincount(dset.hard_labels())
    counts = counts[counts > 0]
    return int(counts[0]) if len(counts) and bool((counts == counts[0]).all()) else None


def card_text(meta: dict, repo: str) -> str:
    """README.md: YAML front matter, then a short human summary generated from the same metadata."""
    import yaml

    block = meta["rd3kit"]
    proto = block.get("protocol") or {}
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        f"# {meta['pretty_name']}", "",
        f"Distilled with **{block['method']}** from `{block['source_dataset']}`: {block['num_images']} images "
        f"({block['image_shape']}), {block['label_type']} labels, stored in the `{block['space']}` space.", "",
        f"Recommended evaluation protocol: `{proto.get('ref', 'none stated')}`"
        + (f" (sha256 `{proto['sha256']}`)." if proto else "."), "",
        "Get it pinned and verified with rd3kit (replace COMMIT with this commit's 40-hex id):", "",
        "```", f"rd3kit pull {repo}@COMMIT", "```", "",
        "The `rd3kit:` block above is machine-readable; its `files` map gives each data file's sha256.",
    ]
    return "\n".join(lines) + "\n"
