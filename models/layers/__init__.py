"""Small Keras layers for the CTR models (all registered under package "ctr")."""

from models.layers.cross import CrossNetwork
from models.layers.cross_v2 import CrossNetworkV2
from models.layers.feature_embedding import FeatureEmbedding
from models.layers.feedback_attention import FeedbackAttention
from models.layers.feedback_transformer import FeedbackTransformer
from models.layers.field_slice import FieldSlice
from models.layers.fm import FMInteraction
from models.layers.linear import SparseLinear
from models.layers.masked_pooling import MaskedMeanPooling
from models.layers.mlp import MLP
from models.layers.numeric_features import NumericFeatures
from models.layers.position_embedding import PositionEmbedding
from models.layers.target_attention import TargetAttention

__all__ = [
    "CrossNetwork",
    "CrossNetworkV2",
    "FMInteraction",
    "FeatureEmbedding",
    "FeedbackAttention",
    "FeedbackTransformer",
    "FieldSlice",
    "MLP",
    "MaskedMeanPooling",
    "NumericFeatures",
    "PositionEmbedding",
    "SparseLinear",
    "TargetAttention",
]
