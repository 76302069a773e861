"""The fast update path: the gradient of a minibatch loss without an autograd graph.

For the small MLP actor-critics of classic control and MuJoCo, an update step costs per-operation
overhead, not arithmetic (docs/performance.md). This package computes the same gradient as
autograd with the fewest operations there can be: the forward pass keeps its activations
(:func:`network.forward_cached`), the loss is differentiated by hand with respect to the network
outputs (:mod:`.heads` for log-prob and entropy, :mod:`.ppo` for PPO's loss), and one matrix
product per layer and direction gives the parameter gradients (:func:`network.backward_cached`),
written straight into the caller's flat gradient buffer.

Everything the fast path knows lives here; :class:`ppokit.algos.common.GradientStep` calls it
when the config's ``update_path`` allows (``auto``, ``eager`` or ``fast``) and :func:`supports`
says the agent qualifies. ``tests/test_fast_update.py`` checks every function against autograd.

Shapes: M samples per minibatch, P policy outputs, H hidden units. A population of agents would
add one leading dimension ``[K, ...]`` to every tensor here (``torch.baddbmm`` for ``addmm``).
"""

from __future__ import annotations

from ppokit.fast.network import supports

__all__ = ["supports"]
