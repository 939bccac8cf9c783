"""Artifacts: the files a scenario loads, prepared once and cached by content.

The cache key is a hash of everything that decides the file's bytes (model, seed,
precision, format, torch version). Files are written under a temporary name and moved
into place, so two runs preparing the same artifact never see a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bump when the way artifacts are written changes, so old cache entries are not reused.
ARTIFACT_FORMAT_VERSION = 2  # 2: ONNX Runtime int8 files are pre-processed before quantization


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    bytes: int
    prepare_s: float  # time spent preparing it in this run; 0.0 when taken from the cache
    cached: bool
    facts: dict[str, Any]  # what the writer reported about the file, e.g. quantized layers


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_artifact(
    cache_dir: Path, key_fields: dict[str, Any], filename: str, write: Callable[[Path], dict[str, Any] | None]
) -> Artifact:
    """The artifact for `key_fields`, written with `write(path)` unless already cached and intact.

    `write` may return facts about the file; they are kept with it and returned on every hit.
    """
    key_text = json.dumps({**key_fields, "format_version": ARTIFACT_FORMAT_VERSION}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    entry = cache_dir / key
    path = entry / filename
    meta_path = entry / "meta.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if file_sha256(path) == meta.get("sha256"):
            return Artifact(path, meta["sha256"], path.stat().st_size, 0.0, cached=True, facts=meta.get("facts", {}))
    entry.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fd, tmp_name = tempfile.mkstemp(dir=entry, prefix=".tmp-", suffix=Path(filename).suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        facts = write(tmp) or {}
        sha = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    prepare_s = time.perf_counter() - started
    meta = {"key": json.loads(key_text), "sha256": sha, "bytes": path.stat().st_size, "file": filename, "facts": facts}
    tmp_meta = entry / f".meta-{os.getpid()}.json"
    try:
        tmp_meta.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(tmp_meta, meta_path)
    finally:
        tmp_meta.unlink(missing_ok=True)  # a disk that filled up leaves no half-written file behind
    return Artifact(path, sha, meta["bytes"], prepare_s, cached=False, facts=facts)
