"""Registering a promoted challenger (and its rebuilt edge variant) with lineage, all or nothing.

Both versions carry the job id in their recipe (``retrain.job_id`` / ``retrain_job``). The
challenger is published first, then the edge variant as its child; when the second publish
fails, the first is removed again before the error goes on. A job whose process died between
the two leaves versions that :func:`remove_job_versions` finds by that id and removes (child
first), which is what recovery does: no version of a dead job stays registered.
"""

from __future__ import annotations

import builtins
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import EdgeError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.data.dataset import Dataset
from edgeloop.registry.registry import Registry
from edgeloop.registry.store import ModelVersion


@dataclass(frozen=True, slots=True)
class EdgeRecipe:
    """The champion's edge variant: its name and the optimization recipe that made it."""

    name: str
    recipe: str
    ref: ModelRef

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "recipe": self.recipe, "from": str(self.ref)}


def edge_recipe(registry: Registry, champion: ModelRef) -> EdgeRecipe | None:
    """The newest variant the optimize stage registered as a child of ``champion``, or None."""
    found = [
        v
        for v in registry.store.children(champion)
        if v.name != champion.name and isinstance(v.manifest.recipe.get("recipe"), str)
    ]
    if not found:
        return None
    newest = max(found, key=lambda v: (v.created_at, v.version))
    return EdgeRecipe(newest.name, str(newest.manifest.recipe["recipe"]), newest.ref)


def job_of(version: ModelVersion) -> str | None:
    """The id of the retraining job that registered ``version`` (None: none did)."""
    recipe = version.manifest.recipe
    block = recipe.get("retrain")
    if isinstance(block, dict) and isinstance(block.get("job_id"), str):
        return str(block["job_id"])
    job = recipe.get("retrain_job")
    return str(job) if isinstance(job, str) else None


def remove_job_versions(
    settings: Settings, job_id: str, names: builtins.list[str] | None = None
) -> builtins.list[str]:
    """Remove every version (of ``names``; None: of any name) that job ``job_id`` registered,
    children first; return the refs removed."""
    removed: builtins.list[str] = []
    with Registry.open(settings) as registry:
        found = registry.list() if names is None else [v for n in names for v in registry.list(n)]
        mine = [v for v in found if job_of(v) == job_id]
        # A child's parent is one of ours too: remove the ones nothing derives from first.
        while mine:
            leaves = [v for v in mine if not registry.store.children(v.ref)]
            if not leaves:
                break  # someone else derived a version from ours: leave the chain alone
            for v in leaves:
                registry.remove(v.ref)
                removed.append(str(v.ref))
                mine.remove(v)
    return removed


def challenger_manifest(
    champion: ModelVersion,
    exported: Any,
    trained: Any,
    train: Dataset,
    lineage: dict[str, Any],
) -> Manifest:
    """The challenger's manifest: the champion's data lineage (so its original test split stays
    the one later jobs compare on), the new recipe, and the ``retrain`` block."""
    from edgeloop.pipeline.register import model_manifest

    made = model_manifest(
        champion.name, exported, trained, train, (), split_seed=train_seed(champion.manifest)
    )
    old = champion.manifest
    recipe = {**dict(old.recipe), **dict(made.recipe), "retrain": lineage}
    recipe.pop("checkpoint", None)
    return dataclasses.replace(
        made,
        source_data_hash=old.source_data_hash,
        dataset=old.dataset,
        recipe=recipe,
        parent=champion.ref,
        labels=old.labels,
    )


def train_seed(manifest: Manifest) -> int:
    recipe = manifest.recipe
    return int(recipe.get("split_seed", (recipe.get("fit") or {}).get("seed", 0)))


def register_all(
    settings: Settings,
    challenger: tuple[Path, Manifest],
    edge: tuple[Path, Manifest] | None,
    reference: Dataset,
) -> tuple[ModelRef, ModelRef | None]:
    """Publish the challenger, then its edge variant (parented to it); all or nothing.

    Raises:
        EdgeError: from the registry; whatever this call published was removed again.
    """
    from edgeloop.pipeline.register import register

    new = register(challenger[0], challenger[1], settings, reference=reference).ref
    if edge is None:
        return new, None
    try:
        manifest = dataclasses.replace(edge[1], parent=new)
        return new, register(edge[0], manifest, settings, reference=reference).ref
    except BaseException:
        try:
            with Registry.open(settings) as registry:
                registry.remove(new)
        except EdgeError:
            pass  # recovery finds it by the job id and removes it
        raise
