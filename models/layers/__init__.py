"""Small Keras layers for the CTR models (all registered under package "ctr")."""
from models.layers.masked_pooling import MaskedMeanPooling
from models.layers.mlp import MLP

__all__ = ["MaskedMeanPooling", "MLP"]
