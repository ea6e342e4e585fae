"""The edge agent: enrollment, the reconcile loop, the OTA updater with A/B slots, serving.

It talks to the control plane over HTTP only (docs/fleet-protocol.md) and never imports torch.
"""
