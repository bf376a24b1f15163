"""IRT for cheap fitness: multidimensional 2PL fit, item bank, abilities with a prior."""

from evomerge.fitness.irt.ability import fit_latent
from evomerge.fitness.irt.bank import ItemBank, fit_item_bank, response_matrix
from evomerge.fitness.irt.fit import IRTFit, fit_mirt_2pl, predict_proba

__all__ = ["IRTFit", "ItemBank", "fit_item_bank", "fit_latent", "fit_mirt_2pl", "predict_proba", "response_matrix"]
