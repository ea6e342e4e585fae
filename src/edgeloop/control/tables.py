"""The control plane's tables (SQLAlchemy Core), in the registry's database.

Times are Unix seconds (floats): comparable on every backend without time-zone surprises.
JSON columns are text written by the control plane itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database

metadata_obj = sa.MetaData()

enrollment_tokens = sa.Table(
    "control_enrollment_tokens",
    metadata_obj,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("tier", sa.Integer, nullable=True),
    sa.Column("parent", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
    sa.Column("node_id", sa.String(64), nullable=True),
)

nodes = sa.Table(
    "control_nodes",
    metadata_obj,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("tier", sa.Integer, nullable=True),
    sa.Column("parent", sa.String(64), nullable=True),
    sa.Column("capabilities", sa.Text, nullable=False),
    sa.Column("device_class", sa.String(64), nullable=False),
    sa.Column("agent_url", sa.Text, nullable=True),
    sa.Column("enrolled_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=True),
    sa.Column("reported", sa.Text, nullable=True),
    # The desired-state document last signed for the node (JSON) and its revision.
    sa.Column("desired_revision", sa.Integer, nullable=False),
    sa.Column("desired", sa.Text, nullable=True),
    # The outbox backlog totals of the last report (control/backlog_store.py), for the fleet's
    # "backlog > 0" filter; backlog_at NULL: the report was stored without them.
    sa.Column("backlog_rows", sa.BigInteger, nullable=True, index=True),
    sa.Column("backlog_bytes", sa.BigInteger, nullable=True),
    sa.Column("backlog_oldest_s", sa.Float, nullable=True),
    sa.Column("backlog_at", sa.Float, nullable=True),
)

rollouts = sa.Table(
    "control_rollouts",
    metadata_obj,
    sa.Column("rollout_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, index=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("phase_started_at", sa.Float, nullable=False),
    sa.Column("resume_state", sa.String(16), nullable=True),
    # [[node ids of wave 0], [wave 1], ...]
    sa.Column("waves", sa.Text, nullable=False),
    # {node_id: {"wave", "revision", "previous", "models", "reverted_revision"}}
    sa.Column("nodes", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

rollout_events = sa.Table(
    "control_rollout_events",
    metadata_obj,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.String(64), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

telemetry = sa.Table(
    "control_telemetry",
    metadata_obj,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("content_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON text, or base64 for bytes
    sa.Column("model", sa.String(128), nullable=True, index=True),
    sa.Column("model_version", sa.String(32), nullable=True),
)


# Fleet monitoring (control/monitoring.py): each node's latest view of each served version.
monitoring = sa.Table(
    "control_monitoring",
    metadata_obj,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("metrics_at", sa.Float, nullable=True),  # the newest metrics item's created_at
    sa.Column("snapshot", sa.Text, nullable=True),  # JSON: that item's figures for this version
    sa.Column("event_at", sa.Float, nullable=True),  # the newest monitor event's created_at
    sa.Column("event", sa.Text, nullable=True),  # JSON: that event
    sa.Column("drift_event_at", sa.Float, nullable=True),  # the newest drift event's created_at
    sa.Column("received_at", sa.Float, nullable=False),  # the control plane's clock
)

# Alerts (control/alerts.py): one row per (rule, subject) episode, firing until it resolves.
alerts = sa.Table(
    "control_alerts",
    metadata_obj,
    sa.Column("alert_id", sa.String(36), primary_key=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("resolved_at", sa.Float, nullable=True),
    sa.Column("figures", sa.Text, nullable=False),  # JSON: the numbers that drove it
)

# Drift over time per version (control/drift_history.py): one row per version and minute.
drift_history = sa.Table(
    "control_drift_history",
    metadata_obj,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("bin_start", sa.Float, primary_key=True, index=True),
    sa.Column("drift_ratio_max", sa.Float, nullable=True),
    sa.Column("nodes_drifting", sa.Integer, nullable=False),
    sa.Column("nodes_reporting", sa.Integer, nullable=False),
    sa.Column("reports", sa.Integer, nullable=False),
    sa.Column("reports_watched", sa.Integer, nullable=False),
    sa.Column("windowed_sum", sa.Float, nullable=False),
    sa.Column("windowed_count", sa.Integer, nullable=False),
    sa.Column("estimated_sum", sa.Float, nullable=False),
    sa.Column("estimated_count", sa.Integer, nullable=False),
    sa.Column("alarms", sa.Integer, nullable=False),
)
# The minute each node was last counted in, per version (a node counts once per minute).
drift_counted = sa.Table(
    "control_drift_counted",
    metadata_obj,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("reported_bin", sa.Float, nullable=True),
    sa.Column("drifting_bin", sa.Float, nullable=True),
)
drift_alarms = sa.Table(
    "control_drift_alarms",
    metadata_obj,
    sa.Column("alarm_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Index("ix_control_drift_alarms_version_at", "model", "model_version", "at"),
)


def create_tables(db: Database) -> None:
    """Create the control plane's tables if missing (safe against a racing creator)."""

    def run() -> None:
        try:
            metadata_obj.create_all(db.engine)
        except sa_exc.DBAPIError:
            metadata_obj.create_all(db.engine)
        from edgeloop.control import backlog_store  # a database made before its columns

        backlog_store.add_columns(db)

    tuf_store.guarded(db, "creating the control plane tables", run)
