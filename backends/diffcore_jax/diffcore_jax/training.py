"""The JAX trainer: :class:`JaxTrainer`, the ``diffcore.training.Trainer`` of the JAX backend.

One optimisation step is one jitted function (per objective, number of micro-batches, clipping
on/off, EMA on/off and shapes): the objective is a static argument; weights, optimizer state, EMA,
the micro-batches (their keys and ``t_probs`` included), the learning rate, the clipping norm and
the EMA decay are traced, so a new learning rate each step (warmup) compiles nothing. The jitted
step is shared by trainers of one network structure (nnx graph definition: no weights) and one
optimizer config, in a bounded cache (:func:`_step_function`, 16 entries): nothing global holds
weights, and a second trainer of the same network (a resumed run, a test) compiles nothing.

The optimizer is ``optax.inject_hyperparams(optax.adamw)``, which computes torch.optim.AdamW's
update: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, ``m_hat = m / (1 - b1^k)``,
``v_hat = v / (1 - b2^k)``, ``p <- p - lr (m_hat / (sqrt(v_hat) + eps) + wd p)`` with eps outside
the square root and the decay on the old ``p`` in both (torch folds the bias corrections into the
step size and the denominator and applies the decay first as ``p (1 - lr wd)``: the same formula,
rounded differently).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from diffcore.networks import MLPConfig, UNetConfig, check_weights, from_nnx, layout, nnx_path, to_nnx
from diffcore.training import DROPOUT, Batch, LossOut, OptimizerConfig, StepOut

from .networks import FrozenParam

__all__ = ["JaxTrainer", "DATA_AXIS"]

#: the mesh axis the batch is split along
DATA_AXIS = "data"


def _paths(tree: Any) -> list[tuple]:
    """The nnx state paths of a State's leaves, in ``jax.tree.leaves`` order."""
    out = []
    for keypath, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = []
        for k in keypath:
            if isinstance(k, jax.tree_util.DictKey):
                parts.append(k.key)
            elif isinstance(k, jax.tree_util.SequenceKey):
                parts.append(k.idx)
            # GetAttrKey('value'): the Variable's value, not part of the path
        out.append(tuple(parts))
    return out


def _check_number(value: Any, name: str, *, low: float, high: float | None = None, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and (high is None or v <= high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and <= {high}")
        raise ValueError(f"{name} must be finite and {bound}; got {value!r}")
    return v


def _adamw(optimizer: OptimizerConfig) -> optax.GradientTransformation:
    """``optax.adamw`` with every hyperparameter an argument of its state (float32 even with x64
    on), so the learning rate is set per step without recompiling."""
    b1, b2 = optimizer.betas
    return optax.inject_hyperparams(optax.adamw, hyperparam_dtype=jnp.float32)(
        learning_rate=optimizer.lr, b1=b1, b2=b2, eps=optimizer.eps, weight_decay=optimizer.weight_decay
    )


@functools.lru_cache(maxsize=16)
def _step_function(graphdef: Any, optimizer: OptimizerConfig, backend: Any, compiler_options: tuple,
                   mesh: Any = None) -> Any:
    """The jitted step of a network structure, optimizer and mesh (objective static, the rest traced).

    With a mesh, the inputs arrive sharded (the batch along "data", the rest replicated) and jit's
    SPMD partitioner splits the computation over the devices, inserting the gradient all-reduce."""
    step = functools.partial(_train_step, graphdef, _adamw(optimizer), backend, optimizer.precision == "bf16", mesh)
    return jax.jit(step, static_argnums=0, compiler_options=dict(compiler_options) or None)


def _mesh_of(mesh: Any) -> Any:
    """None, or a ``jax.sharding.Mesh`` with a "data" axis and automatic (GSPMD) axis types."""
    from jax.sharding import AxisType, Mesh

    if mesh is None:
        return None
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"mesh must be None, 'auto' or a jax.sharding.Mesh; got {mesh!r}")
        # every device of every process, one "data" axis (jax.devices() lists them process by process)
        return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be None, 'auto' or a jax.sharding.Mesh; got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh must have an axis named {DATA_AXIS!r} (the batch is split along it); got axes {mesh.axis_names}"
        )
    if any(t != AxisType.Auto for t in mesh.axis_types):
        # jax.make_mesh makes Explicit axes by default; the step is written for sharding
        # propagation (the batch sharded, everything else replicated), so use the same devices
        # with Auto axes
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    return mesh


def _local(tree: Any) -> Any:
    """A tree of replicated arrays as single-device arrays on this process's first device of each."""

    def one(a):
        if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1:
            return a.addressable_data(0)
        return a

    return jax.tree.map(one, tree)


def _same_shapes(batches: Sequence[Batch]) -> bool:
    """Whether the micro-batches have one tree structure and equal shapes and dtypes (stackable)."""
    first = jax.tree.structure(batches[0])
    sig = lambda b: [(jnp.shape(a), jnp.result_type(a)) for a in jax.tree.leaves(b)]  # noqa: E731
    return all(jax.tree.structure(b) == first and sig(b) == sig(batches[0]) for b in batches[1:])


def _train_step(graphdef, tx, backend, bf16, mesh, objective, params, rest, opt_state, ema, batches, global_batch, lr,
                clip_norm, ema_decay):
    """One step (traced once per objective and structure): see :meth:`JaxTrainer.step`."""

    def micro_loss(p, batch):
        r = rest
        if bf16:
            cast = lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
            p, r = jax.tree.map(cast, p), jax.tree.map(cast, rest)
        model = nnx.merge(graphdef, p, r)
        dropout_key = jax.random.fold_in(batch.key, DROPOUT)

        def net(x, t_in, cond=None):
            if bf16:
                x = jnp.asarray(x).astype(jnp.bfloat16)
            out = model(x, t_in, cond, dropout_key=dropout_key, sample_ids=batch.ids)
            return out.astype(jnp.float32) if bf16 else out

        out = objective(backend, net, batch)
        if not isinstance(out, LossOut):
            out = LossOut(*out)
        n = jnp.shape(batch.ids)[0]
        for field in ("loss", "raw") + (("t",) if out.t is not None else ()):
            shape = jnp.shape(getattr(out, field))
            if shape != (n,):
                raise ValueError(
                    f"objective {objective!r} returned {field} of shape {shape}; expected ({n},), one per example"
                )
        return jnp.sum(out.loss) / global_batch, out

    grad_fn = jax.grad(micro_loss, has_aux=True)
    if len(batches) > 1 and _same_shapes(batches):
        # k equal micro-batches: one lax.scan, so the network's backward is compiled once, not k
        # times; the gradients are summed in micro-batch order as the unrolled loop would.
        def body(acc, batch):
            g, out = grad_fn(params, batch)
            return jax.tree.map(jnp.add, acc, g), (out.loss, out.raw, out.t)

        stacked = jax.tree.map(lambda *a: jnp.stack(a), *batches)
        grads, (loss, raw, t) = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), stacked)
        loss, raw = loss.reshape(-1), raw.reshape(-1)
        t = None if t is None else t.reshape(-1)
        ids = stacked.ids.reshape(-1)
    else:
        grads, outs = None, []
        for batch in batches:  # a static count, unrolled
            g, out = grad_fn(params, batch)
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
            outs.append(out)
        loss = jnp.concatenate([o.loss for o in outs])
        raw = jnp.concatenate([o.raw for o in outs])
        t = None if outs[0].t is None else jnp.concatenate([o.t for o in outs])
        ids = jnp.concatenate([b.ids for b in batches])
    norm = optax.tree.norm(grads)
    finite = jnp.logical_and(jnp.isfinite(norm), jnp.all(jnp.isfinite(loss)))
    if clip_norm is not None:
        scale = jnp.minimum(1.0, clip_norm / (norm + 1e-6))
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    new_ema = ema
    if ema is not None and ema_decay is not None:
        new_ema = jax.tree.map(
            lambda e, p: ema_decay.astype(e.dtype) * e + (1 - ema_decay).astype(e.dtype) * p, ema, new_params
        )
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    out = keep(new_params, params), keep(new_opt, opt_state), keep(new_ema, ema), (loss, raw, t, ids, norm, finite)
    if mesh is not None:  # everything replicated: each process reads any example's values locally
        out = jax.lax.with_sharding_constraint(out, NamedSharding(mesh, PartitionSpec()))
    return out


class JaxTrainer:
    """A :class:`diffcore.training.Trainer` for an nnx ``UNet2D`` / ``MLP`` (``diffcore_jax.networks``).

    Holds the graph definition, the trained parameters (``nnx.Param``; frozen ones such as the
    Fourier frequencies stay as they are), the optax AdamW state and the EMA of the parameters.
    ``network`` is the module given, brought up to date with the trained weights when read.
    ``precision="bf16"``: weights and inputs cast to bfloat16 for the forward, the network output
    cast back to float32 (the loss in float32), gradients, update and EMA in float32.
    ``compiler_options``: XLA options for the step's compilation (``jax.jit(compiler_options=)``;
    e.g. ``{"xla_backend_optimization_level": 0}`` compiles a CPU step in about half the time).

    ``mesh``: data parallelism on JAX's own machinery. None: one device (the default device).
    A ``jax.sharding.Mesh`` with a "data" axis (``jax.make_mesh((n,), ("data",))``), or "auto"
    (every device of every process on one "data" axis): parameters, optimizer state and EMA
    replicated, each micro-batch (x0, ids, cond) split along "data"; the jitted step is
    partitioned by XLA (SPMD), which inserts the all-reduce of the gradient. Each micro-batch
    must divide by the number of this process's devices on the mesh. Every draw is keyed by the
    example's global id, so the step is the same on any number of devices (to float rounding).
    In a ``jax.distributed`` job (``jax.process_count() > 1``) the mesh defaults to "auto",
    :attr:`world` is the job's ``diffcore_jax.distributed.JaxWorld``, each process passes its own
    examples (global ids), the global batch is assembled with
    ``jax.make_array_from_process_local_data``, and :meth:`step` returns its own examples' values.
    """

    def __init__(
        self, backend: Any, network: Any, optimizer: OptimizerConfig, *, ema: bool = True,
        compiler_options: Mapping[str, Any] | None = None, mesh: Any = None,
    ) -> None:
        config = getattr(network, "config", None)
        if not isinstance(network, nnx.Module) or not isinstance(config, (UNetConfig, MLPConfig)):
            raise TypeError(
                "network must be a diffcore_jax.networks.UNet2D or MLP (an nnx module with a UNetConfig / "
                f"MLPConfig); got {type(network).__name__}"
            )
        if not isinstance(optimizer, OptimizerConfig):
            raise TypeError(f"optimizer must be a diffcore.training.OptimizerConfig; got {type(optimizer).__name__}")
        if not isinstance(ema, bool):
            raise TypeError(f"ema must be True or False; got {ema!r}")
        self.backend = backend
        self.optimizer = optimizer
        self.config = network.config
        self._network = network
        self._graphdef, self._params, self._rest = nnx.split(network, nnx.Param, ...)
        self._opt_state = _adamw(optimizer).init(self._params)
        self._ema = self._params if ema else None
        self._synced = True
        if compiler_options is not None and not isinstance(compiler_options, Mapping):
            raise TypeError(f"compiler_options must be a mapping of XLA options or None; got {compiler_options!r}")
        options = tuple(sorted((compiler_options or {}).items()))
        self.world = None
        if jax.process_count() > 1:
            from .distributed import JaxWorld

            self.world = JaxWorld()
            mesh = "auto" if mesh is None else mesh
        self.mesh = _mesh_of(mesh)
        if self.mesh is not None:
            local = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
            if not local:
                raise ValueError(f"mesh has none of this process's devices ({jax.local_devices()}); mesh: {self.mesh}")
            self._replicated = NamedSharding(self.mesh, PartitionSpec())
            self._sharded = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
            # how many parts of each process's examples its devices hold along "data"
            self._local_parts = len({idx[0].start for idx in
                                     self._sharded.addressable_devices_indices_map((self.mesh.shape[DATA_AXIS],)).values()})
            self._params, self._rest, self._opt_state = self._replicate((self._params, self._rest, self._opt_state))
            self._ema = self._params if ema else None
        else:
            # one placement for the whole state: committed to the weights' device. A network placed
            # with device= has committed weights while optax's fresh state is not; the first step's
            # outputs are all committed, so the second step missed jit's cache and compiled again
            # (about 20 s for the demo's U-Net)
            leaves = jax.tree.leaves(self._params)
            self._device = next(iter(leaves[0].devices())) if leaves and hasattr(leaves[0], "devices") else jax.devices()[0]
            self._params, self._rest, self._opt_state = self._place_state((self._params, self._rest, self._opt_state))
            self._ema = self._params if ema else None
        self._step = _step_function(self._graphdef, optimizer, backend, options, self.mesh)
        entries = {nnx_path(e): e for e in layout(self.config)}
        self._param_entries = [entries[p] for p in _paths(self._params)]  # the trained ones, leaf order
        self._rest_entries = [entries.get(p) for p in _paths(self._rest)]
        if None in self._rest_entries:  # the module and the layout disagree: a bug, not bad input
            raise RuntimeError(f"nnx state has paths outside the layout: {_paths(self._rest)}")
        frozen = nnx.state(network, FrozenParam)
        trained = {e.name for e in self._param_entries}
        self._trained_names = [e.name for e in layout(self.config) if e.name in trained]  # layout order
        self._frozen_names = [entries[p].name for p in _paths(frozen)]

    # the protocol --------------------------------------------------------------------------------
    @property
    def network(self) -> Any:
        """The module given, holding the current weights."""
        if not self._synced:
            nnx.update(self._network, *_local((self._params, self._rest)))
            self._synced = True
        return self._network

    def step(
        self,
        objective: Any,
        batches: Sequence[Batch],
        *,
        global_batch: int,
        lr: float,
        clip_norm: float | None,
        ema_decay: float | None,
    ) -> StepOut:
        """One optimisation step over ``batches`` (``diffcore.training.Trainer.step``): the
        gradient of ``sum_b loss_b / global_batch`` summed over the micro-batches, clipped by its
        global norm, AdamW at ``lr``, then the EMA. Compiles once per (objective, number of
        micro-batches, clipping on/off, EMA on/off, shapes); micro-batches of equal shapes run
        in one ``lax.scan`` (the backward compiled once), others unrolled. If the loss or the
        gradient norm is not finite nothing changes and ``applied`` is False."""
        try:
            hash(objective)
        except TypeError:
            raise TypeError(
                f"objective must be hashable (a frozen dataclass or a function): it is a static argument of the "
                f"compiled step; got {type(objective).__name__}"
            ) from None
        if isinstance(batches, Batch) or not isinstance(batches, Sequence) or not batches:
            raise TypeError(f"batches must be a non-empty sequence of Batch; got {type(batches).__name__}")
        for i, b in enumerate(batches):
            if not isinstance(b, Batch):
                raise TypeError(f"batches[{i}] must be a diffcore.training.Batch; got {type(b).__name__}")
        batches_in = batches
        if isinstance(global_batch, bool) or not isinstance(global_batch, (int, np.integer)) or global_batch < 1:
            raise ValueError(f"global_batch must be a positive integer; got {global_batch!r}")
        lr = _check_number(lr, "lr", low=0.0, low_open=False)
        if clip_norm is not None:
            clip_norm = _check_number(clip_norm, "clip_norm", low=0.0)
        if ema_decay is not None:
            if self._ema is None:
                raise ValueError(f"ema_decay={ema_decay!r}: this trainer keeps no EMA (made with ema=False); pass None")
            ema_decay = _check_number(ema_decay, "ema_decay", low=0.0, high=1.0, low_open=False)
        scalar = (lambda v: np.asarray(v, np.float32)) if self.mesh is not None else (lambda v: jnp.asarray(v, jnp.float32))  # noqa: E731
        if clip_norm is not None:
            clip_norm = scalar(clip_norm)
        if ema_decay is not None:
            ema_decay = scalar(ema_decay)
        if self.mesh is None:
            batches = tuple(Batch(*(None if a is None else jnp.asarray(a) for a in b)) for b in batches)
        else:
            batches = tuple(self._place(b, i) for i, b in enumerate(batches))
        try:
            self._params, self._opt_state, self._ema, out = self._step(
                objective, self._params, self._rest, self._opt_state, self._ema, batches,
                scalar(global_batch), scalar(lr), clip_norm, ema_decay,
            )
            self._synced = False
            loss, raw, t, ids, norm, finite = jax.device_get(_local(out))  # the step's one host transfer
        except Exception as err:
            if self.world is not None:
                from .distributed import failure, is_runtime_failure

                if is_runtime_failure(err):
                    raise failure(self.world.rank, self.world.size, "the training step", err) from err
            raise
        loss, raw, t = np.asarray(loss), np.asarray(raw), None if t is None else np.asarray(t)
        if self.world is not None:  # the global batch's values: keep this process's examples, in its order
            mine = np.concatenate([np.asarray(b.ids).reshape(-1) for b in batches_in])
            order = np.argsort(ids, kind="stable")
            where = order[np.searchsorted(ids[order], mine)]
            loss, raw, t = loss[where], raw[where], None if t is None else t[where]
        return StepOut(loss, raw, t, float(norm), bool(finite))

    def state_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """{"params", "ema" (when kept), "optimizer"}: NumPy arrays in the portable layout
        (layout names, torch shapes; optimizer "step", "exp_avg/<name>", "exp_avg_sq/<name>" for
        the trained parameters)."""
        adam = self._adam_state()
        out = {"params": self._weights(self._params)}
        if self._ema is not None:
            out["ema"] = self._weights(self._ema)
        opt = {"step": np.asarray(int(adam.count), dtype=np.int64)}
        for prefix, tree in (("exp_avg/", adam.mu), ("exp_avg_sq/", adam.nu)):
            arrays = self._portable(self._param_entries, tree)
            opt.update({prefix + n: arrays[n] for n in self._trained_names})
        out["optimizer"] = opt
        return out

    def load_state_arrays(self, state: Mapping[str, Mapping[str, Any]]) -> None:
        """Load :meth:`state_arrays`' output (either backend's); every name and shape is checked
        before anything is assigned."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a mapping with 'params', 'optimizer' (and 'ema'); got {type(state).__name__}"
            )
        need = ["params", "optimizer"] + (["ema"] if self._ema is not None else [])
        missing = [k for k in need if k not in state]
        unknown = sorted(set(state) - {"params", "optimizer", "ema"})
        if missing or unknown:
            raise ValueError(f"state: missing {missing}, unknown {unknown}; expected the keys {need}")
        params = check_weights(self.config, state["params"], source="state['params']")
        ema = check_weights(self.config, state["ema"], source="state['ema']") if self._ema is not None else None
        opt = state["optimizer"]
        if not isinstance(opt, Mapping):
            raise TypeError(f"state['optimizer'] must be a mapping; got {type(opt).__name__}")
        shapes = {e.name: e.shape for e in self._param_entries}
        expected = ["step"] + [p + n for p in ("exp_avg/", "exp_avg_sq/") for n in shapes]
        problems = []
        missing = [n for n in expected if n not in opt]
        unknown = sorted(n for n in opt if n not in set(expected))
        if missing:
            problems.append(f"missing {len(missing)}: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unknown:
            problems.append(f"unexpected {len(unknown)}: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
        step = None
        if "step" in opt:
            s = np.asarray(opt["step"])
            if s.shape != () or s.dtype.kind not in "iu" or int(s) < 0 or int(s) > np.iinfo(np.int32).max:
                problems.append(f"step: expected a non-negative integer scalar; found {s!r}")
            else:
                step = int(s)
        moments = {}
        for n in expected[1:]:
            if n in opt:
                a = np.asarray(opt[n])
                want = shapes[n.split("/", 1)[1]]
                if a.shape != want or a.dtype.kind != "f":
                    problems.append(f"{n}: expected a float array of shape {want}, found {a.dtype} {a.shape}")
                moments[n] = a
        if problems:
            raise ValueError("state['optimizer'] does not match the trainer's parameters: " + " | ".join(problems))
        # everything checked: assign
        new_params = self._from_portable(self._params, self._param_entries, params)
        new_rest = self._from_portable(self._rest, self._rest_entries, params)
        adam = self._adam_state()
        mu = self._from_portable(adam.mu, self._param_entries, {n: moments["exp_avg/" + n] for n in shapes})
        nu = self._from_portable(adam.nu, self._param_entries, {n: moments["exp_avg_sq/" + n] for n in shapes})
        count = jnp.asarray(step, adam.count.dtype)
        inner = (adam._replace(count=count, mu=mu, nu=nu),) + tuple(self._opt_state.inner_state[1:])
        count = jnp.asarray(step, self._opt_state.count.dtype)
        self._opt_state = self._opt_state._replace(count=count, inner_state=inner)
        self._params, self._rest = new_params, new_rest
        if ema is not None:
            self._ema = self._from_portable(self._ema, self._param_entries, ema)
        self._params, self._rest, self._opt_state, self._ema = self._place_state(
            (self._params, self._rest, self._opt_state, self._ema))
        self._synced = False

    def _place_state(self, tree: Any) -> Any:
        """The state where the step keeps it: replicated over the mesh, or committed to the device
        (so that the step's inputs always look alike to jit's cache)."""
        return self._replicate(tree) if self.mesh is not None else jax.device_put(tree, self._device)

    def ema_network(self) -> Any:
        """A new nnx module of the network's class holding the EMA weights."""
        if self._ema is None:
            raise ValueError("ema_network(): this trainer keeps no EMA (made with ema=False)")
        return nnx.merge(self._graphdef, *_local((self._ema, self._rest)))

    # helpers ------------------------------------------------------------------------------------
    def _replicate(self, tree: Any) -> Any:
        """The tree's arrays replicated over the mesh (every process holds the same values)."""

        def one(a):
            if not isinstance(a, (jax.Array, np.ndarray, np.generic)):
                return a
            host = a if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else np.asarray(jax.device_get(_local(a)))
            return jax.make_array_from_callback(host.shape, self._replicated, lambda idx: host[idx])

        return jax.tree.map(one, tree)

    def _place(self, batch: Batch, i: int) -> Batch:
        """A micro-batch on the mesh: x0, ids, cond split along "data" (this process's examples
        are its part of the global micro-batch), key and t_probs replicated."""
        n = np.shape(batch.ids)[0] if batch.ids is not None else np.shape(batch.x0)[0]
        if n % self._local_parts:
            raise ValueError(
                f"batches[{i}] has {n} examples on this process; with a mesh it must be a multiple of the "
                f"{self._local_parts} devices this process has on the mesh's {DATA_AXIS!r} axis (choose "
                "batch_size / micro_batch_size accordingly)"
            )
        procs = jax.process_count() if self.world is not None else 1

        def shard(a):
            if a is None:
                return None
            a = np.asarray(jax.device_get(a))
            return jax.make_array_from_process_local_data(self._sharded, a, (a.shape[0] * procs,) + a.shape[1:])

        fields = batch._asdict()
        out = {k: shard(fields[k]) for k in ("x0", "ids", "cond")}
        out["key"] = self._replicate(jnp.asarray(batch.key) if not isinstance(batch.key, jax.Array) else batch.key)
        out["t_probs"] = None if batch.t_probs is None else self._replicate(np.asarray(jax.device_get(batch.t_probs)))
        return Batch(**out)

    def _adam_state(self) -> Any:
        adam = self._opt_state.inner_state[0]
        if not isinstance(adam, optax.ScaleByAdamState):  # optax changed adamw's chain: a bug here
            raise RuntimeError(f"unexpected optax adamw state {type(adam).__name__}")
        return adam

    @staticmethod
    def _portable(entries: list, tree: Any) -> dict[str, np.ndarray]:
        leaves = jax.device_get(jax.tree.leaves(tree))
        return {e.name: np.array(from_nnx(e, np.asarray(a))) for e, a in zip(entries, leaves)}

    def _weights(self, trained: Any) -> dict[str, np.ndarray]:
        both = {**self._portable(self._param_entries, trained), **self._portable(self._rest_entries, self._rest)}
        return {e.name: both[e.name] for e in layout(self.config)}

    @staticmethod
    def _from_portable(template: Any, entries: list, arrays: Mapping[str, np.ndarray]) -> Any:
        leaves, treedef = jax.tree.flatten(template)
        new = [jnp.asarray(to_nnx(e, np.asarray(arrays[e.name])), dtype=old.dtype) for e, old in zip(entries, leaves)]
        return jax.tree.unflatten(treedef, new)

    def __repr__(self) -> str:
        return f"JaxTrainer({type(self._network).__name__}, {self.optimizer!r}, ema={self._ema is not None})"
