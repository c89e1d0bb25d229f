"""Causal tests of the attention: knockouts (remove chosen prefix keys from chosen queries and layers, measure how
the action chunk moves). `knockout` is the general API on any pi0viz JAX model; `study` runs key sets (cameras,
masks, the top / bottom of a map, prompt tokens) on one observation against matched random sets, by key masking and
by pixel replacement; `curves` ranks maps by deletion and insertion curves; `reach` is the study on reach-tiny's
held-out scenes; `prefix` captures the prefix's own attention as a `pi0viz.prefix/1` side file (docs/causal.md)."""
