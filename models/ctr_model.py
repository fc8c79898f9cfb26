"""The Keras model class every CTR model is (or extends)."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Mapping

import keras
import tensorflow as tf

from feature_spec import checked_model_inputs
from models.optimizers import FusedAdam
from models.params import recorded, registered, resolve

try:  # keras 3 internals used by the stock TF train_step
    from keras.src.losses.loss import unscale_loss_for_distribution
except ImportError:  # pragma: no cover

    def unscale_loss_for_distribution(value):
        return value


@keras.saving.register_keras_serializable(package="ctr")
class CTRModel(keras.Model):
    """Functional model rebuilt from ``(spec, params, model_name)``.

    ``model_name`` names an entry of ``registered_models``: its graph, a function
    ``graph(spec, params) -> (inputs, outputs)``, and its parameters' declaration; the
    config holds only the spec's model-input entries and the resolved params, so
    ``keras.models.load_model`` rebuilds the same graph and loads the weights into it.

    Called with a dict, the model keeps the keys it has inputs for and ignores
    the others: Keras matches a dict to a functional model's inputs by sorted
    position, so an extra key (a label, a metadata column) would otherwise
    shift the features silently.  A missing feature raises ValueError.
    """

    # Every model by name: an entry with its ``graph`` and its ``params`` declaration (models/registry.py
    # MODELS). The registry sets it once it has imported every model module: this module never imports it.
    registered_models: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self, spec: dict, params: dict | None = None, model_name: str = "emb_mlp", name: str | None = None, **kwargs
    ):
        graph = registered(self.registered_models, model_name).graph
        spec = {"features": [dict(e) for e in checked_model_inputs(spec)]}
        resolved = resolve(self.registered_models, model_name, params)
        inputs, outputs = graph(spec, resolved)
        super().__init__(inputs=inputs, outputs=outputs, name=name or model_name, **kwargs)
        self._model_name = model_name
        self._spec_json = json.dumps(spec, sort_keys=True)
        # resolved params, the model's own only: a later change of a default cannot change a saved model's graph
        self._params_json = json.dumps(resolved, sort_keys=True)
        self._feature_names = tuple(inputs)

    @property
    def model_name(self) -> str:
        """The registry name of the model (``emb_mlp``, ``deepfm``, ...)."""
        return self._model_name

    @property
    def ctr_params(self) -> dict:
        """The params the model was built with, defaults filled in: those its model reads."""
        return json.loads(self._params_json)

    def default_optimizers(self, p: dict) -> dict:
        """``compile`` keyword arguments naming the optimizers for resolved params ``p``: Adam (learning_rate),
        one fused kernel per variable (models/optimizers.py)."""
        return {"optimizer": FusedAdam(learning_rate=p["learning_rate"])}

    # -- training --------------------------------------------------------
    def optimizer_groups(self) -> list[tuple]:
        """``(optimizer, variables)`` pairs that partition the trainable variables: here one, Adam for all."""
        return [(self.optimizer, list(self.trainable_variables))]

    def gradient_step(self, x, y, sample_weight=None):
        """One step on a batch: the compiled loss, its gradient, each variable group applied by its
        optimizer (``optimizer_groups``); returns ``(loss, y_pred)``.

        Keras ``fit`` (``train_step``) and the distributed loop (``strategy.run``,
        pipelines/training/distributed.py) both step here. Under tf.distribute Keras divides each
        replica's loss by the number of replicas and the optimizers sum the replicas' gradients."""
        if self.optimizer is None:
            raise ValueError(f"{type(self).__name__}: call compile() (models.compile_model) before training")
        groups = self.optimizer_groups()
        variables = [v for _, group in groups for v in group]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        start = 0
        for optimizer, group in groups:
            optimizer.apply(grads[start : start + len(group)], group)
            start += len(group)
        return loss, y_pred

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, y_pred = self.gradient_step(x, y, sample_weight)
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(loss), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
        )
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def select_inputs(self, features: dict) -> dict:
        missing = [n for n in self._feature_names if n not in features]
        if missing:
            raise ValueError(f"model {self.name!r} is missing input features {missing}")
        return {n: features[n] for n in self._feature_names}

    def __call__(self, *args, **kwargs):
        if args and isinstance(args[0], dict):
            args = (self.select_inputs(args[0]),) + tuple(args[1:])
        elif isinstance(kwargs.get("inputs"), dict):
            kwargs["inputs"] = self.select_inputs(kwargs["inputs"])
        return super().__call__(*args, **kwargs)

    def get_config(self):
        return {
            "spec": json.loads(self._spec_json),
            "params": json.loads(self._params_json),
            "model_name": self._model_name,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "kind" in config:  # saved before the attribute was renamed
            config["model_name"] = config.pop("kind")
        declaration = registered(cls.registered_models, config.get("model_name", "emb_mlp")).params
        config["params"] = recorded(declaration, config.get("params"))
        return cls(**config)
