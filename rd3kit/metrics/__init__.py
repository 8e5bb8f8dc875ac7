"""Scores over accuracies (DD-Ranking's HLR/IOR/LRS/ARS) and distribution metrics; must not train or do I/O."""
