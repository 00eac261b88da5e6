"""Tests of the network rules: the ruleset as data, and real packets in namespaces."""
