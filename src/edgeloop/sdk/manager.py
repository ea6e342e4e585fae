"""``EdgeMLManager``: the fleet of one site from Python, over the control plane's HTTP API.

    edge = EdgeMLManager("factory-edge-01")          # a profile from `edgeloop site add`
    edge = EdgeMLManager.from_fleet(".edgeloop-fleet")  # or a local fleet's folder
    print(edge.get_edge_status()["nodes"]["total_nodes"])

Every figure comes from the control plane's records, the node's own report or a run here;
a figure nobody measured is None with the reason beside it. Calls that need a capability the
fleet does not have yet raise :class:`~edgeloop.core.errors.ConfigError` naming what is missing.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edgeloop.core.errors import ConfigError, NotFoundError, TransportError
from edgeloop.core.types import ModelRef
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.experiments import ExperimentCalls
from edgeloop.sdk.inputs import as_array, v2_body, v2_outputs
from edgeloop.sdk.models import EdgeModel, shapes_match
from edgeloop.sdk.results import (
    BenchmarkResult,
    DeployResult,
    EdgeStatus,
    FederatedRound,
    IncrementalResult,
    InferenceResult,
    ModelList,
    NodeCounts,
    NodeInfo,
    NodeStatus,
    PruneResult,
    QuantizeResult,
    model_info,
    node_info,
)
from edgeloop.sdk.site import Site, get_site

DRIFT_WINDOW_S = 600.0  # how old a node's latest metrics snapshot may be
NODE_LABEL = "edgeloop.node"  # the label deploy_model targets one node by


class EdgeMLManager(ExperimentCalls):
    """The models and nodes of one site. ``site``: a profile name or a :class:`Site`.
    Fleet A/B experiments: ``start_experiment`` ... (:mod:`edgeloop.sdk.experiments`).

    Raises:
        NotFoundError: an unknown site (the message lists the known ones).
    """

    def __init__(
        self,
        site: str | Site,
        *,
        home: Path | None = None,
        timeout_s: float = 30.0,
        online_window_s: float = 60.0,
    ) -> None:
        self.site = site if isinstance(site, Site) else get_site(site, home)
        self.online_window_s = online_window_s
        self.timeout_s = timeout_s
        self.control = ControlClient(self.site.url, self.site.token, timeout_s=timeout_s)

    @classmethod
    def from_fleet(cls, folder: str | Path, **kwargs: Any) -> EdgeMLManager:
        """A manager for the local fleet ``edgeloop fleet up --dir FOLDER`` started."""
        from edgeloop.sdk.local_fleet import LocalFleet

        fleet = LocalFleet.load(Path(folder))
        return cls(Site("local-fleet", fleet.control_url, fleet.admin_token), **kwargs)

    def close(self) -> None:
        self.control.close()

    def __enter__(self) -> EdgeMLManager:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- reads --------------------------------------------------------------------------------

    def get_model_list(self) -> ModelList:
        """Every registered version, with latency and accuracy from its manifest's measurement."""
        return ModelList([model_info(row) for row in self.control.models()])

    def get_edge_status(self) -> EdgeStatus:
        """How many nodes there are, how many reported recently, and which models they serve."""
        nodes = [self._node_info(row) for row in self.control.nodes()]
        active = sorted({m for n in nodes for m in n.active_models})
        classes = Counter(n.device_class or "unknown" for n in nodes)
        counts = NodeCounts(len(nodes), sum(n.online for n in nodes), dict(classes))
        return EdgeStatus(len(active), active, counts, self.online_window_s)

    def get_node_status(self) -> NodeStatus:
        """Each node as it reported itself, by node name; ``drift`` is the monitoring state
        of the node's latest metrics snapshot (shipped through its outbox) within
        ``DRIFT_WINDOW_S``."""
        nodes = {n.name: n for n in map(self._node_info, self.control.nodes())}
        return NodeStatus({name: self._with_drift(n) for name, n in nodes.items()})

    # --- one node -----------------------------------------------------------------------------

    def run_inference(self, model_id: str, input_data: Any, target_node: str) -> InferenceResult:
        """Run ``model_id`` on ``target_node``'s server (Open Inference Protocol v2).

        ``inference_time_ms`` is measured here around the HTTP call (network included).

        Raises:
            NotFoundError: unknown model or node, or the node does not serve the model.
            ConfigError, DataError: an input that cannot be the model's input.
            TransportError: the node did not answer.
        """
        ref = ModelRef.parse(model_id)
        row = self._model_row(ref)
        node = self._node_row(target_node)
        url = node.get("agent_url")
        if not url:
            raise NotFoundError(f"node {node['name']!r} has no server URL on the control plane")
        base = f"{str(url).rstrip('/')}/v2/models/{ref.name}"
        meta = self._node_call(node, "GET", base)
        array = as_array(input_data, meta["inputs"][0], row.get("manifest"))
        body = v2_body(array, meta["inputs"][0])
        started = time.perf_counter()
        doc = self._node_call(node, "POST", f"{base}/infer", json=body)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        outputs = v2_outputs(doc)
        return InferenceResult(
            output=next(iter(outputs.values()), []),
            outputs=outputs,
            inference_time_ms=elapsed_ms,
            server_time_ms=None,
            model_name=str(doc.get("model_name") or ref.name),
            model_version=None if doc.get("model_version") is None else str(doc["model_version"]),
            node=str(node["name"]),
            reason="the node's v2 answer carries no server-side time",
        )

    def deploy_model(
        self,
        model: EdgeModel | str,
        node_id: str,
        *,
        soak_s: float = 5.0,
        timeout_s: float = 300.0,
    ) -> DeployResult:
        """Roll ``model`` out to the one node ``node_id`` (name or id); wait until committed.

        The node gets the label ``edgeloop.node=<name>`` so a deployment can select it alone.

        Raises:
            NotFoundError: unknown model or node.
            ConfigError: the EdgeModel's declared shapes do not fit the registered artifact.
            TransportError: the rollout was rolled back, or not done within ``timeout_s``.
        """
        model_id = model.model_id if isinstance(model, EdgeModel) else model
        row = self._model_row(ModelRef.parse(model_id))
        if isinstance(model, EdgeModel):
            self._check_shapes(model, row)
        node = self._node_row(node_id)
        name = str(node["name"])
        labels = {**node["labels"], NODE_LABEL: name}
        if node["labels"].get(NODE_LABEL) != name:
            self.control.label(str(node["node_id"]), labels)
        plan = {"waves": ["100%"], "soak_s": soak_s, "watch_s": soak_s}
        spec = {
            "name": f"sdk-{row['name']}-{name}"[:128],
            "model": row["ref"],
            "selector": {"labels": {NODE_LABEL: name}},
            "plan": plan,
        }
        started = self.control.deploy(spec)
        done = self.control.wait_rollout(
            started["rollout_id"], {"COMPLETED", "ROLLED_BACK"}, timeout_s
        )
        if done["state"] != "COMPLETED":
            raise TransportError(
                f"the rollout of {row['ref']} to node {name!r} ended {done['state']}; the node "
                f"keeps its previous model. Last events: {done['events'][-3:]}",
                hint=f"see `edgeloop fleet rollouts` and the node's log for {done['rollout_id']}",
            )
        info = model_info(row)
        stated = model.stated() if isinstance(model, EdgeModel) else {}
        measured = {"accuracy": info.accuracy, "latency_ms": info.latency_ms}
        return DeployResult(
            int(row["version"]), str(row["ref"]), name, str(done["rollout_id"]), done["state"],
            stated, measured, info.reason,
        )  # fmt: skip

    # --- optimization (runs here, registers on the control plane) -----------------------------

    def quantize_model(
        self, model_id: str, precision: str = "int8", *, data: str | None = None, runs: int = 200
    ) -> QuantizeResult:
        """Quantize the registered model here, measure both, register the variant; see
        :func:`edgeloop.sdk.variants.quantize`."""
        from edgeloop.sdk.variants import quantize

        return quantize(self.control, self._model_row(ModelRef.parse(model_id)), precision,
                        data=data, runs=runs)  # fmt: skip

    def prune_model(
        self,
        model_id: str,
        sparsity: float = 0.3,
        *,
        data: str | None = None,
        epochs: int = 3,
        runs: int = 200,
    ) -> PruneResult:
        """Prune the registered model's checkpoint here, measure both, register the variant;
        see :func:`edgeloop.sdk.variants.prune`."""
        from edgeloop.sdk.variants import prune

        return prune(self.control, self._model_row(ModelRef.parse(model_id)), sparsity,
                     data=data, epochs=epochs, runs=runs)  # fmt: skip

    # --- on the nodes, through the control plane ----------------------------------------------

    def benchmark_model(self, model_id: str, node_id: str, **options: Any) -> BenchmarkResult:
        """Benchmark ``model_id`` on ``node_id`` by that node's agent (through the control
        plane); ``options``: ``runs``, ``warmup``, ``batch_size``, ``timeout_s``. See
        :func:`edgeloop.sdk.benchmark.run_on_node`.

        Raises:
            NotFoundError: unknown model or node, or the node does not hold that version.
            TransportError: the node failed or did not answer in time.
        """
        from edgeloop.sdk.benchmark import run_on_node

        row = self._model_row(ModelRef.parse(model_id))
        return run_on_node(self.control, str(row["ref"]), self._node_row(node_id), **options)

    def federated_learning_round(
        self, model_id: str, client_nodes: list[str], **options: Any
    ) -> FederatedRound:
        """One federated round of FL model ``model_id`` (``digits-mlp``, ``digits-cnn``) on
        ``client_nodes`` through the control plane's FL API; ``options``: ``rounds`` (1),
        ``strategy``, ``local`` ({lr, epochs, batch_size, mu}), ``deadline_s``, ``seed``,
        ``timeout_s``. See :func:`edgeloop.sdk.federated.run_rounds`."""
        from edgeloop.sdk.federated import run_rounds

        return run_rounds(self.control, model_id, client_nodes, **options)

    # --- helpers ------------------------------------------------------------------------------

    def _model_row(self, ref: ModelRef) -> dict[str, Any]:
        rows = self.control.models()
        mine = [r for r in rows if r["name"] == ref.name]
        if ref.version is not None:
            mine = [r for r in mine if int(r["version"]) == ref.version]
        if not mine:
            known = ", ".join(sorted({str(r["ref"]) for r in rows})) or "none"
            raise NotFoundError(
                f"model {str(ref)!r} is not registered on {self.site.url} (registered: {known})",
                hint="publish it with `edgeloop fleet publish MODEL.onnx --name NAME`",
            )
        return max(mine, key=lambda r: int(r["version"]))

    def _node_row(self, node: str) -> dict[str, Any]:
        rows = self.control.nodes()
        for row in rows:
            if node in (row["name"], row["node_id"]):
                return row
        known = ", ".join(sorted(str(r["name"]) for r in rows)) or "none"
        raise NotFoundError(
            f"node {node!r} is not enrolled on {self.site.url} (nodes: {known})",
            hint="get_node_status() lists them by name",
        )

    def _node_call(self, node: dict[str, Any], method: str, url: str, **kw: Any) -> Any:
        try:
            response = httpx.request(method, url, timeout=self.timeout_s, **kw)
        except httpx.HTTPError as exc:
            raise TransportError(f"node {node['name']!r} did not answer {url}: {exc}") from exc
        if response.status_code == 404:
            raise NotFoundError(
                f"node {node['name']!r} does not serve that model ({url} answered 404)",
                hint="deploy it there first: deploy_model(model_id, node)",
            )
        if response.status_code >= 400:
            raise TransportError(
                f"node {node['name']!r} answered {response.status_code} to {method} {url}: "
                f"{response.text[:300]}"
            )
        return response.json()

    def _node_info(self, row: dict[str, Any]) -> NodeInfo:
        return node_info(row, self.online_window_s, time.time())

    def _with_drift(self, node: NodeInfo) -> NodeInfo:
        since = datetime.fromtimestamp(time.time() - DRIFT_WINDOW_S, UTC).isoformat()
        items = self.control.telemetry(node=node.node_id, kind="metrics", since=since)
        snapshots = [i["payload"] for i in items if isinstance(i.get("payload"), dict)]
        drift = snapshots[-1].get("monitoring") if snapshots else None
        if drift is None:
            why = f"no metrics snapshot with a monitoring state in {DRIFT_WINDOW_S:.0f} s"
            return replace(node, reasons={**node.reasons, "drift": why})
        reasons = {k: v for k, v in node.reasons.items() if k != "drift"}
        return replace(node, drift=drift, reasons=reasons)

    def _check_shapes(self, model: EdgeModel, row: dict[str, Any]) -> None:
        import tempfile

        from edgeloop.formats.onnx_info import inspect_onnx

        if model.input_shape is None and model.output_shape is None:
            return
        with tempfile.TemporaryDirectory(prefix="edgeloop-sdk-") as work:
            info = inspect_onnx(self.control.download_artifact(row, Path(work) / "model.onnx"))
        for label, declared, specs in (
            ("input_shape", model.input_shape, info.inputs),
            ("output_shape", model.output_shape, info.outputs),
        ):
            registered = tuple(specs[0].shape)
            if declared is not None and not shapes_match(declared, registered):
                raise ConfigError(
                    f"EdgeModel {label}={declared} does not fit {row['ref']}'s {specs[0].name!r} "
                    f"of shape {registered} (None: any size); nothing was deployed",
                    hint=f"state the shape the artifact has, e.g. {label}={registered}",
                )


class OnDeviceTraining:
    """Incremental training of a fleet model with the on-device training library.

    ``manager``: the site's manager (default: the one saved site profile). See
    :mod:`edgeloop.sdk.on_device` for what runs where.
    """

    def __init__(self, manager: EdgeMLManager | None = None) -> None:
        self.manager = manager

    def incremental_train(
        self, model_id: str, new_data: Any, epochs: int = 1, **options: Any
    ) -> IncrementalResult:
        """Fine-tune ``model_id``'s registered checkpoint on ``new_data`` ((x, y) or a
        Dataset) for ``epochs``; ``options`` go to ``IncrementalConfig`` (lr, replay_size,
        max_forgetting_pp, ...). An accepted run is registered with lineage.

        Raises:
            ConfigError: unlabelled data, no checkpoint or data set registered, no site.
            DataError: data that does not fit the model.
        """
        from edgeloop.sdk.on_device import default_manager, train

        edge = self.manager if self.manager is not None else default_manager()
        try:
            return train(edge, model_id, new_data, epochs, **options)
        finally:
            if self.manager is None:
                edge.close()
