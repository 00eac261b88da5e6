"""Desired state -> plan -> kernel: the reconcile loop."""
