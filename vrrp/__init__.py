"""VRRP v2/v3 run by directord (see the VRRP issue)."""
