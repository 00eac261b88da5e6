"""Route health injection: which VIPs to announce (:mod:`.decision`), the ExaBGP API dialogue
(:mod:`.exabgp_api`), the supervised ExaBGP child (:mod:`.exabgp`) and its pipe relay
(:mod:`.relay`), and the kernel-route backend for BIRD/FRR (:mod:`.kernel_routes`).

Kept free of imports so that ``python -m director.bgp.relay`` starts fast.
"""
