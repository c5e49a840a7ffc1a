"""What every experiment driver needs around its steps: mesh, tokenizer, global batches.

Kept out of the drivers so that each driver reads as wiring, and out of the
math modules so that they stay pure.
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np

from rlhf_jax import sharding

TOKENIZER_FILE = "tokenizer.model"


def mesh_and_rules(config):
    """The device mesh and logical-axis rules of ``config.mesh`` and ``config.sharding_rules``."""
    rules = sharding.normalize_rules(config.sharding_rules)
    return sharding.make_mesh(config.mesh), rules


def seed_key(config, *names: str) -> jax.Array:
    """A PRNG key for one purpose, derived from ``config.seed`` and purpose names."""
    key = jax.random.key(config.seed)
    for name in names:
        key = jax.random.fold_in(key, int.from_bytes(name.encode()[:4].ljust(4, b"\0"), "little"))
    return key


def resolve_tokenizer(workdir: str, *, path: str = "", init_from: str = "",
                      template: str = "auto"):
    """The tokenizer of a run, in order: `path`, the `init_from` run's, this workdir's copy.

    What the config names comes first; the workdir's own copy is what a run that
    trained its tokenizer (pretraining) finds on resume. The tokenizer is loaded,
    which checks it, before it is copied into the workdir with the files beside it
    that say how to use it (``tokenizer_config.json``: chat template, special
    tokens, BOS; ``generation_config.json``), so that the workdir alone can be
    evaluated, exported or used as another run's `init_from`. `template` is
    ``config.tokenizer.template``: "auto" (the checkpoint's chat template if it
    has one) or "plain". Returns None when there is none yet (the caller trains one).
    """
    from rlhf_jax.data.template import SIDE_FILES  # noqa: PLC0415
    from rlhf_jax.data.tokenizer import Tokenizer  # noqa: PLC0415  (no sentencepiece at import)

    own = os.path.join(workdir, TOKENIZER_FILE)
    if path and not os.path.exists(path):
        raise FileNotFoundError(f"config.tokenizer.path={path!r} does not exist")
    upstream = os.path.join(init_from, TOKENIZER_FILE) if init_from else ""
    if upstream and not path and not os.path.exists(upstream):
        raise FileNotFoundError(
            f"init_from={init_from!r} has no {TOKENIZER_FILE}; is it the workdir of a finished run?"
        )
    for candidate in (path, upstream, own):
        if candidate and os.path.exists(candidate):
            tok = Tokenizer.load(candidate, template=template)
            if os.path.abspath(candidate) != os.path.abspath(own) and jax.process_index() == 0:
                os.makedirs(workdir, exist_ok=True)
                folder = os.path.dirname(os.path.abspath(candidate))
                for src, dst in [(candidate, own)] + [
                        (os.path.join(folder, f), os.path.join(workdir, f)) for f in SIDE_FILES]:
                    if os.path.exists(src):
                        shutil.copyfile(src, dst + ".tmp")
                        os.replace(dst + ".tmp", dst)
            return tok
    return None


def required_tokenizer(config, workdir: str, who: str, init_from_kind: str):
    """The run's tokenizer (as :func:`resolve_tokenizer`), checked against the model's vocab.

    For phases that cannot train one: none found is a ValueError telling the
    user to set ``config.init_from`` to ``init_from_kind`` or ``config.tokenizer.path``.
    """
    tok = resolve_tokenizer(workdir, path=config.tokenizer.path, init_from=config.init_from,
                            template=config.tokenizer.get("template", "auto"))
    if tok is None:
        raise ValueError(f"{who} needs a tokenizer: set config.init_from to {init_from_kind} "
                         "or config.tokenizer.path to a SentencePiece .model file")
    check_vocab(config.model, tok)
    if config.tokenizer.get("byte_fallback") and not tok.has_byte_fallback:
        print(f"warning: config.tokenizer.byte_fallback=True has no effect on {tok.source}, "
              "which has no byte pieces: characters it cannot spell become unk (counted in "
              "inputs.json)", flush=True)
    bos = ", BOS first" if tok.chat.add_bos and tok.chat.name == "plain" else ""
    print(f"{who}: tokenizer {tok.source} ({tok.vocab_size} pieces, {tok.chat.name} chat "
          f"format{bos})", flush=True)
    return tok


def write_config(config, workdir: str) -> str:
    """Writes the resolved config to ``<workdir>/config.json`` (valid JSON for any tool)."""
    import json  # noqa: PLC0415

    path = os.path.join(workdir, "config.json")
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    json.loads(text)
    with open(path, "w") as f:
        f.write(text + "\n")
    return path


def write_json(path: str, obj, *, sort_keys: bool = True) -> str:
    """Writes JSON atomically: a kill leaves the old file or the new one, never half of one."""
    import json  # noqa: PLC0415

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=sort_keys)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_config(workdir: str):
    """The resolved config a run wrote to ``<workdir>/config.json``, as a ConfigDict."""
    import json  # noqa: PLC0415

    import ml_collections  # noqa: PLC0415

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; is {workdir!r} the workdir of a run?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def check_vocab(model_cfg, tok) -> None:
    if model_cfg.vocab_size < tok.vocab_size:
        raise ValueError(
            f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
            f"{tok.vocab_size} pieces ({tok.source or 'trained'})"
        )


def barrier(name: str) -> None:
    """Waits for every process (multi-process runs only), e.g. after process 0 wrote files."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def global_batch(mesh, local: dict) -> dict:
    """This process's rows of a batch -> global arrays sharded over the batch axes."""
    data = sharding.batch_sharding(mesh)
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    rows = next(iter(local.values())).shape[0] * jax.process_count()
    if rows % ways:
        raise ValueError(
            f"a batch of {rows} rows cannot be split over the mesh's data x fsdp = {ways} "
            "devices; make the batch size a multiple of it (or change config.mesh)"
        )
    return {
        k: jax.make_array_from_process_local_data(data, np.asarray(v)) for k, v in local.items()
    }


def process_rows(batch_size: int) -> slice:
    """The rows of a global batch this process feeds (`global_batch` assembles them)."""
    count, index = jax.process_count(), jax.process_index()
    if batch_size % count:
        raise ValueError(f"batch size {batch_size} is not divisible by {count} processes")
    per = batch_size // count
    return slice(index * per, (index + 1) * per)


def to_host(x) -> np.ndarray:
    """A device array as numpy on every process, gathering it if it spans several hosts."""
    if getattr(x, "is_fully_addressable", True) or getattr(x, "is_fully_replicated", False):
        return np.asarray(x)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicated(mesh, tree):
    """Puts host values on every device of the mesh (small inputs such as prompts to sample)."""
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), rep), tree)
