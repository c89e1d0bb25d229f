"""Causal tests of the attention: knockouts (remove chosen prefix keys from chosen queries and layers, measure
how the action chunk moves). `knockout` is the general API on any pi0viz JAX model; `reach` is the study on
reach-tiny's held-out scenes (docs/causal.md)."""
