"""Coreset baselines (random, herding, k-center) as stored index lists; must not train or touch the network."""
