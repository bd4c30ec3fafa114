"""Lineage of a stage run: its verified parent, the tokenizer's identity, and meta.json over every ancestor.

A :class:`Parent` is read only after :func:`~chaosfm.train.load_run` has checked the sha256 of
every file it lists (a damaged file is named), and only if its stage may precede the stage being
run (:data:`PARENTS`). The tokenizer's identity is one sha256 over its folder
(:func:`tokenizer_sha256`): a stage keeps its parent's tokenizer, and a different one, or data the
tokenizer cannot encode, is refused (:func:`check_tokenizer`) before anything trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._artifacts import ArtifactError, write_json, write_meta
from chaosfm._config import ConfigError
from chaosfm.data import frame_kind, merge_trained_through, trained_through_from_json
from chaosfm.data import trained_through_to_json as to_json
from chaosfm.train._codes import CONFIG_FILE, MODEL_CONFIG_FILE, MODEL_FILE, load_run
from chaosfm.train._tokenized import CODES_FILE, TOKENIZER_DIR, TokenizerSection, is_bins

__all__ = ["PARENTS", "Parent", "check_tokenizer", "copy_parent_files", "tokenizer_sha256", "write_meta_for_stage"]

PARENTS: dict[str, tuple[str | None, ...]] = {
    "pretrain": (None, "train", "pretrain"),  # "train": a run of `chaosfm train --config`
    "midtrain": ("pretrain",),
    "sft": ("midtrain", "pretrain"),
    "rl": ("sft",),
}


def tokenizer_sha256(directory: str | os.PathLike[str]) -> str:
    """One sha256 over the files of a tokenizer folder (name and content of each)."""
    from chaosfm._artifacts import sha256

    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.relative_to(root)}:{sha256(path)}\n".encode())
    return digest.hexdigest()


class Parent:
    """A verified parent run: its model, meta, config, tokenizer and code layout."""

    def __init__(self, path: str | os.PathLike[str], stage: str):
        from chaosfm.tokenizers import load_tokenizer

        self.path = Path(path)
        if not self.path.is_dir():
            raise ArtifactError(f"--in {self.path}: no such run folder")
        self.model, self.meta = load_run(self.path)  # every hash checked; a damaged file is named
        self.stage = self.meta.get("stage") or ("train" if self.meta.get("command") == "train" else None)
        if self.stage not in PARENTS[stage]:
            wanted = " or ".join("a `chaosfm train` run" if p == "train" else f"a {p} run" for p in PARENTS[stage] if p)
            found = f"a {self.stage} run" if self.stage else "not a run of `chaosfm train` or `chaosfm stage`"
            raise ConfigError(f"--in {self.path}: {stage} needs {wanted}; this is {found} (meta.json 'stage')")
        if not (self.path / CODES_FILE).is_file():
            raise ArtifactError(f"{self.path / CODES_FILE}: missing; the parent has no tokenizer layout")
        self.tokenizer = load_tokenizer(self.path / TOKENIZER_DIR)
        self.tokenizer_sha = tokenizer_sha256(self.path / TOKENIZER_DIR)
        recorded = self.meta.get("tokenizer_sha256")
        if recorded is not None and recorded != self.tokenizer_sha:
            raise ArtifactError(f"{self.path / TOKENIZER_DIR}: not the tokenizer meta.json records")
        if int(self.model.config.vocab_size) != self.tokenizer.vocab_size:
            raise ConfigError(
                f"--in {self.path}: its model has {self.model.config.vocab_size} codes, its tokenizer "
                f"{self.tokenizer.vocab_size}"
            )
        self.layout = json.loads((self.path / CODES_FILE).read_text())
        self.config = _read_yaml(self.path / CONFIG_FILE)
        self.trained_through = trained_through_from_json(self.meta.get("trained_through")) or {}
        self.upstream = trained_through_from_json(self.meta.get("upstream_trained_through")) or {}


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) or {} if path.is_file() else {}


def check_tokenizer(
    stage: str, tokenizer: TokenizerSection | None, parent: Parent, frame: pd.DataFrame, names: list[str]
) -> None:
    """The stage keeps its parent's tokenizer, and that tokenizer must be able to encode the data."""
    if tokenizer is not None:
        if tokenizer.kind is not None or tokenizer.path is None:
            raise ConfigError(f"tokenizer: a {stage} stage keeps its parent's tokenizer; give only tokenizer.path")
        given = tokenizer_sha256(tokenizer.path)
        if given != parent.tokenizer_sha:
            raise ConfigError(
                f"tokenizer.path: {tokenizer.path} (sha256 {given[:12]}) is not the tokenizer of "
                f"the parent {parent.path} (sha256 {parent.tokenizer_sha[:12]}): its codes would mean "
                "something else to the model"
            )
    kind = frame_kind(frame)
    if is_bins(parent.tokenizer):
        missing = [c for c in parent.layout["columns"] if c not in frame.columns]
        if missing:
            raise ConfigError(
                f"data.names: {', '.join(names)} lacks column(s) {missing} that the parent's bin tokenizer encodes"
            )
    elif kind != "market":
        raise ConfigError(
            f"data.names: {', '.join(names)} is {kind} data, but the parent's {parent.tokenizer.name} "
            "tokenizer encodes market candles"
        )


def write_meta_for_stage(
    out: Path,
    stage: str,
    seed: int | None,
    *,
    own: dict[str, Any] | None,
    parent: Parent | None,
    upstream: dict[str, Any] | None,
) -> None:
    """``meta.json`` of a stage: lineage, tokenizer identity, and ``trained_through`` over every ancestor."""
    ancestors = parent.trained_through if parent else {}
    extra = {
        "kind": "code_model",
        "command": "stage",
        "stage": stage,
        "parent": None
        if parent is None
        else {"path": str(parent.path), "stage": parent.stage, "model_sha256": parent.meta["files"][MODEL_FILE]},
        "tokenizer_sha256": tokenizer_sha256(out / TOKENIZER_DIR),
        "stage_trained_through": to_json(own),
        "upstream_trained_through": to_json(
            merge_trained_through(upstream, ancestors, parent.upstream if parent else None)
        ),
    }
    write_meta(out, seed=seed, trained_through=to_json(merge_trained_through(own, ancestors)), extra=extra)


def copy_parent_files(parent: Parent, out: Path, scales: dict[str, np.ndarray] | None) -> None:
    """The tokenizer, its code layout and the model config travel with every stage."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(parent.path / TOKENIZER_DIR, out / TOKENIZER_DIR, dirs_exist_ok=True)
    shutil.copyfile(parent.path / MODEL_CONFIG_FILE, out / MODEL_CONFIG_FILE)
    layout = dict(parent.layout)
    if scales is not None:
        layout["bin_scales"] = {a: np.asarray(s).tolist() for a, s in scales.items()}
    write_json(out / CODES_FILE, layout)
