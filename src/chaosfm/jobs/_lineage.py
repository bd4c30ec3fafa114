"""Lineage of a stage run: its verified parent, the tokenizer's identity, and meta.json over every ancestor.

A :class:`Parent` is read only after :func:`~chaosfm.train.load_code_run` has checked the sha256 of
every file it lists (a damaged file is named), and only if its stage may precede the stage being
run (the stage's ``parents``). The tokenizer's identity is one sha256 over its folder
(:func:`~chaosfm.train.tokenizer_sha256`): a stage keeps its parent's tokenizer, and a different
one, or data the tokenizer cannot encode, is refused (:func:`check_tokenizer`) before anything
trains.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from chaosfm._artifacts import ArtifactError, write_json
from chaosfm._config import ConfigError
from chaosfm.data import merge_trained_through
from chaosfm.data import trained_through_to_json as to_json
from chaosfm.jobs._common import finish_run
from chaosfm.train import (
    CODES_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    AbstractStage,
    load_code_run,
    tokenizer_sha256,
)

__all__ = ["Parent", "check_tokenizer", "copy_parent_files", "write_meta_for_stage"]


class Parent:
    """A verified parent run: its model, meta, config, tokenizer and code layout."""

    def __init__(self, path: str | os.PathLike[str], stage: AbstractStage):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ArtifactError(f"--in {self.path}: no such run folder")
        try:
            run = load_code_run(self.path)  # every hash checked; a damaged file is named
        except ConfigError:
            raise ArtifactError(f"{self.path / CODES_FILE}: missing; the parent has no tokenizer layout") from None
        self.model, self.meta, self.tokenizer = run.model, run.meta, run.tokenizer
        self.stage = self.meta.get("stage") or ("train" if self.meta.get("command") == "train" else None)
        if self.stage not in stage.parents:
            wanted = " or ".join("a `chaosfm train` run" if p == "train" else f"a {p} run" for p in stage.parents if p)
            found = f"a {self.stage} run" if self.stage else "not a run of `chaosfm train` or `chaosfm stage`"
            raise ConfigError(f"--in {self.path}: {stage.name} needs {wanted}; this is {found} (meta.json 'stage')")
        self.tokenizer_sha = tokenizer_sha256(self.path / TOKENIZER_DIR)
        self.layout, self.config = run.layout, run.config
        self.trained_through = run.trained_through
        self.upstream = run.upstream_trained_through


def check_tokenizer(stage: AbstractStage, tokenizer: Any, parent: Parent, frame: pd.DataFrame, names: list[str]) -> None:
    """The stage keeps its parent's tokenizer, and that tokenizer must be able to encode the data."""
    if tokenizer is not None:
        if tokenizer.kind is not None or tokenizer.path is None:
            raise ConfigError(f"tokenizer: a {stage.name} stage keeps its parent's tokenizer; give only tokenizer.path")
        given = tokenizer_sha256(tokenizer.path)
        if given != parent.tokenizer_sha:
            raise ConfigError(
                f"tokenizer.path: {tokenizer.path} (sha256 {given[:12]}) is not the tokenizer of "
                f"the parent {parent.path} (sha256 {parent.tokenizer_sha[:12]}): its codes would mean "
                "something else to the model"
            )
    parent.tokenizer.check_encodable(frame, f"data.names: {', '.join(names)}")


def write_meta_for_stage(
    out: Path,
    stage: AbstractStage,
    seed: int | None,
    *,
    own: dict[str, Any] | None,
    parent: Parent | None,
    upstream: dict[str, Any] | None,
) -> None:
    """``meta.json`` of a stage: lineage, tokenizer identity, and ``trained_through`` over every ancestor."""
    ancestors = parent.trained_through if parent else {}
    finish_run(
        out,
        seed=seed,
        trained_through=to_json(merge_trained_through(own, ancestors)),
        kind="code_model",
        command="stage",
        stage=stage.name,
        parent=None
        if parent is None
        else {"path": str(parent.path), "stage": parent.stage, "model_sha256": parent.meta["files"][MODEL_FILE]},
        tokenizer_sha256=tokenizer_sha256(out / TOKENIZER_DIR),
        stage_trained_through=to_json(own),
        upstream_trained_through=to_json(merge_trained_through(upstream, ancestors, parent.upstream if parent else None)),
    )


def copy_parent_files(parent: Parent, out: Path, layout: dict[str, Any]) -> None:
    """The tokenizer, its code layout (with this stage's stream scales) and the model config travel
    with every stage."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(parent.path / TOKENIZER_DIR, out / TOKENIZER_DIR, dirs_exist_ok=True)
    shutil.copyfile(parent.path / MODEL_CONFIG_FILE, out / MODEL_CONFIG_FILE)
    merged = dict(parent.layout)
    if layout.get("bin_scales") is not None:
        merged["bin_scales"] = layout["bin_scales"]
    write_json(out / CODES_FILE, merged)
