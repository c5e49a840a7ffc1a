"""Device mesh over (data, fsdp, tensor) and logical-axis sharding rules.

Parameters carry logical axis names ("vocab", "embed", "heads", "kv_heads",
"head_dim", "mlp") in their NNX ``out_sharding`` metadata; a small table of
rules maps each name to mesh axes. Rules come from the config as a list of
``(logical_name, mesh_axes)`` pairs where mesh_axes is a mesh axis name, a
list of them, or None (replicated). A logical name with no rule is replicated.

Divisibility: when the mesh axes a rule names do not divide a dimension (say
2 kv heads over tensor=4), that dimension falls back to replication and a
warning is logged once per (name, size, axes). A mesh axis already used by an
earlier dimension of the same array is likewise dropped, because an array may
use each mesh axis at most once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None

DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("length", None),
    ("layers", None),
)

_warned: set[tuple] = set()


def _get(cfg: Any, name: str):
    if isinstance(cfg, dict):
        return cfg.get(name, 1)
    return getattr(cfg, name, 1)


def make_mesh(mesh_cfg: Any) -> Mesh:
    """A mesh with axes ("data", "fsdp", "tensor") sized by ``mesh_cfg``.

    ``mesh_cfg`` has integer fields data/fsdp/tensor (a ConfigDict, a dict or
    any object; a missing field counts as 1); at most one may be -1, meaning
    "all remaining devices". The product must equal ``jax.device_count()``.
    """
    sizes = {name: _get(mesh_cfg, name) for name in MESH_AXES}
    for name, size in sizes.items():
        if not isinstance(size, int) or (size <= 0 and size != -1):
            raise ValueError(f"mesh.{name}={size!r} must be a positive integer or -1")
    n_devices = jax.device_count()
    fill = [name for name, size in sizes.items() if size == -1]
    if len(fill) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {fill} in {sizes}")
    if fill:
        rest = math.prod(size for size in sizes.values() if size != -1)
        if n_devices % rest:
            raise ValueError(
                f"mesh {sizes}: the fixed axes multiply to {rest}, which does not divide "
                f"the {n_devices} devices, so mesh.{fill[0]}=-1 cannot be filled"
            )
        sizes[fill[0]] = n_devices // rest
    total = math.prod(sizes.values())
    if total != n_devices:
        raise ValueError(
            f"mesh {sizes} has {total} devices but jax.device_count() is {n_devices}; "
            "the product of data, fsdp and tensor must match (or set one to -1)"
        )
    return jax.make_mesh(
        tuple(sizes[name] for name in MESH_AXES),
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
    )


def normalize_rules(rules: Iterable[Sequence[Any]]) -> tuple[tuple[str, MeshAxes], ...]:
    """Checks config-style rules (lists of pairs) and returns them as hashable tuples."""
    out = []
    for i, rule in enumerate(rules):
        if isinstance(rule, str) or len(rule) != 2:
            raise ValueError(
                f"sharding rule {i} is {rule!r}; expected a (logical_name, mesh_axes) pair"
            )
        name, axes = rule
        if axes is not None and not isinstance(axes, str):
            axes = tuple(axes)
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            if axis not in MESH_AXES:
                raise ValueError(
                    f"sharding rule {i} ({name!r}) names mesh axis {axis!r}; "
                    f"expected one of {list(MESH_AXES)} or None"
                )
        out.append((name, axes))
    return tuple(out)


def _spec(logical: Sequence[str | None] | None, shape, mesh: Mesh, rules) -> PartitionSpec:
    """The PartitionSpec for one array; ``shape`` None skips divisibility checks."""
    if not logical:
        return PartitionSpec()
    table = dict(normalize_rules(rules))
    used: set[str] = set()
    entries = []
    for dim, name in enumerate(logical):
        axes = table.get(name) if name is not None else None
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes = tuple(a for a in axes if a not in used)
        size = math.prod(mesh.shape[a] for a in axes)
        if shape is not None and axes and shape[dim] % size:
            key = (name, shape[dim], axes)
            if key not in _warned:
                _warned.add(key)
                logging.warning(
                    "logical axis %r of size %d is not divisible by mesh axes %s (size %d); "
                    "replicating it", name, shape[dim], axes, size,
                )
            axes = ()
        used.update(axes)
        entries.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*entries)


def _is_axes(x) -> bool:
    return x is None or (isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x))


def logical_to_sharding(logical_axes_tree, mesh: Mesh, rules, shapes=None):
    """Maps a tree whose leaves are tuples of logical names (or None) to NamedShardings.

    With ``shapes`` (a matching tree of shapes) non-dividing axes are replicated.
    """
    if shapes is None:
        return jax.tree.map(
            lambda axes: NamedSharding(mesh, _spec(axes, None, mesh, rules)),
            logical_axes_tree,
            is_leaf=_is_axes,
        )
    return jax.tree.map(
        lambda axes, shape: NamedSharding(mesh, _spec(axes, shape, mesh, rules)),
        logical_axes_tree,
        shapes,
        is_leaf=_is_axes,
    )


def state_shardings(abstract_state, mesh: Mesh, rules):
    """NamedShardings for an (abstract) NNX state, read from ``out_sharding`` metadata.

    Variables keep their type and metadata, with a NamedSharding as value, so
    the result can be passed as ``out_shardings`` for a function returning the
    state. Plain leaves and variables without names are replicated.
    """

    def one(leaf):
        if isinstance(leaf, nnx.Variable):
            names = leaf.get_metadata().get("out_sharding")
            shape = leaf.get_value().shape
            return leaf.replace(NamedSharding(mesh, _spec(names, shape, mesh, rules)))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules, *args):
    """Runs ``init_fn(*args)`` so that its output is born sharded.

    Shapes come from ``jax.eval_shape``, shardings from the logical names, and
    the real initialisation runs under ``jax.jit(out_shardings=...)``, so no
    device ever holds a full unsharded copy.
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = state_shardings(abstract, mesh, rules)
    return jax.jit(init_fn, out_shardings=shardings)(*args)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ("data", "fsdp"); other axes replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
