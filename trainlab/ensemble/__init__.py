"""Ensembles: independent members trained as one vectorised model, combination rules, ensemble
directories (ensemble.json) and their evaluation. See docs/ensembles.md."""
