"""Adam and FTRL whose update of each variable is one fused TensorFlow kernel.

Keras 3 writes an optimizer's update as a dozen element-wise ops per variable. A CTR model has dozens
of small variables (an embedding table per feature, the wide part's weights, each layer's kernel and
bias), so those ops are a large share of a step, and tracing them lengthens the first step. tf_keras, and deepctr on it, call TensorFlow's fused kernels instead: one
``ResourceApplyAdam`` or ``ResourceApplyFtrlV2`` per variable. These subclasses do the same.

The formulas are Keras 3's own, with t the step (``iterations + 1``):

    Adam:  m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2)
           w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + epsilon)
    FTRL:  n' = n + g^2;  z += g + 2 shrinkage w - (n'^-p - n^-p) / lr * w        (p = learning_rate_power)
           w = (clip(z, -l1, l1) - z) / (n'^-p / lr + 2 (l2 + beta / (2 lr)));  n = n'

A sparse gradient (``tf.IndexedSlices``, from an embedding lookup) is made dense first, as Keras 3's
update does: every row's moments decay at every step. A row looked up several times in a batch gets the
square of its summed gradient, like tf_keras; Keras 3 adds up the squares of the lookups' gradients instead.
tests/test_optimizers.py checks the updates against Keras 3's, step by step, for dense and sparse gradients.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _dense(gradient, dtype):
    if isinstance(gradient, tf.IndexedSlices):
        gradient = tf.convert_to_tensor(gradient)
    return tf.cast(gradient, dtype)


def _handle(variable):
    """The resource handle of a Keras variable or of a tf.Variable (a replica's, inside a strategy's update)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="ctr")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (without amsgrad, which falls back to Keras's own update), one
    ``ResourceApplyAdam`` per variable."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.constant(self.epsilon, dtype),
            grad=_dense(gradient, dtype),
        )


@keras.saving.register_keras_serializable(package="ctr")
class FusedFtrl(keras.optimizers.Ftrl):
    """``keras.optimizers.Ftrl``, one ``ResourceApplyFtrlV2`` per variable."""

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        lr = tf.cast(learning_rate, dtype)
        tf.raw_ops.ResourceApplyFtrlV2(
            var=_handle(variable),
            accum=_handle(self._accumulators[index]),
            linear=_handle(self._linears[index]),
            grad=_dense(gradient, dtype),
            lr=lr,
            l1=tf.constant(self.l1_regularization_strength, dtype),
            l2=tf.constant(self.l2_regularization_strength, dtype) + tf.constant(self.beta, dtype) / (2.0 * lr),
            l2_shrinkage=tf.constant(self.l2_shrinkage_regularization_strength, dtype),
            lr_power=tf.constant(self.learning_rate_power, dtype),
        )
