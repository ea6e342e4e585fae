"""The control plane: fleet identity, deployments, staged rollouts and signed distribution (TUF).

Open it with :meth:`edgeloop.control.plane.ControlPlane.open`, serve it with
:func:`edgeloop.control.app.create_app` (or ``edgeloop control``). The HTTP contract with the
edge agent is docs/fleet-protocol.md; the agent and the control plane never import each other.
"""
