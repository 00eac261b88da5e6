"""director/ipvs."""
