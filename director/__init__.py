"""director: an IPVS director daemon (IPVS reconciler, VRRP, health checks, network rules)."""

__version__ = "0.1.0"
