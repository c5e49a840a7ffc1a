"""The entry point: ``python -m experiments.run --config=configs/<x>.py --workdir=<dir>``.

The config is an ml_collections file with ``get_config(arg=None)``; it is locked,
so ``--config.a.b=v`` can change a field but a misspelt field is an error.
``--config=file.py:arg`` passes ``arg`` to ``get_config`` (presets).
``config.experiment`` names the driver: a module ``experiments/<name>.py`` (or a
dotted module path) with ``run(config, workdir)``.

Before the driver starts, the workdir is taken (:mod:`rlhf_jax.rundir`): the
inputs the config names are checked, the workdir is locked against a second
launch, and a workdir that holds a run of another config is refused, unless
``--extend`` asks to continue it to a new ``num_steps``. A run that starts from
a checkpoint takes its model architecture from it (:mod:`rlhf_jax.inherit`). SIGTERM is honoured
at any moment (exit status 143; rerun to resume). Whatever ends a run early is
one line on stderr (exit status 1; 2 for a mistake in the command line);
``--traceback`` or ``RLHF_JAX_TRACEBACK=1`` adds the traceback.

Multi-process launches (TPU pod slices, SLURM, or explicit coordinator flags)
call ``jax.distributed.initialize`` before anything touches a device.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import traceback

from absl import app, flags
from ml_collections import config_flags

from rlhf_jax import errors, inherit, preemption, rundir

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for a multi-process run."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in such a run.")
_EXTEND = flags.DEFINE_bool(
    "extend", False, "Continue a run in this workdir to a different num_steps (other fields "
    "must match the run's fingerprint.json).")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Print the traceback of an error as well.")

EXPERIMENTS_DIR = os.path.dirname(os.path.abspath(__file__))
NOT_DRIVERS = {"run", "__init__"}


class UsageError(Exception):
    """A mistake in the command line; printed as one line."""


def available_experiments() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules([EXPERIMENTS_DIR]) if m.name not in NOT_DRIVERS
    )


def load_driver(name: str):
    """The module that runs `config.experiment`, or a UsageError listing the valid names."""
    module_name = name if "." in name else f"experiments.{name}"
    if "." not in name and name not in available_experiments():
        raise UsageError(
            f"unknown experiment {name!r} (config.experiment); valid: "
            + ", ".join(available_experiments())
        )
    if importlib.util.find_spec(module_name.rsplit(".", 1)[0]) is None:
        raise UsageError(f"experiment module {module_name!r} not found")
    module = importlib.import_module(module_name)
    if not hasattr(module, "run"):
        raise UsageError(f"experiment module {module_name!r} has no run(config, workdir)")
    return module


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1].split(":", 1)[0]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def _load_config_for_check(path: str, argv: list[str]):
    spec = importlib.util.spec_from_file_location("_rlhf_jax_config_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    arg = None
    for a in argv:
        if a.startswith("--config=") and ":" in a.split("=", 1)[1]:
            arg = a.split("=", 1)[1].split(":", 1)[1]
    return module.get_config(arg) if arg is not None else module.get_config()


def check_command_line(argv: list[str]) -> None:
    """One-line errors for the common mistakes, before absl prints its own."""
    path = _config_path(argv)
    if path is None:
        raise UsageError("missing --config=configs/<name>.py; configs live under configs/")
    if not os.path.isfile(path):
        here = os.path.dirname(path) or "."
        choices = sorted(f for f in os.listdir(here) if f.endswith(".py")) if os.path.isdir(
            here) else []
        hint = f"; files in {here}/: {', '.join(choices)}" if choices else ""
        raise UsageError(f"config file not found: {path}{hint}")
    config = _load_config_for_check(path, argv)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        field = arg[len("--config."):].split("=", 1)[0]
        node, walked = config, []
        for part in field.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = "config" + "".join(f".{w}" for w in walked)
                raise UsageError(
                    f"unknown config field {'config.' + field!r}: {where} has no {part!r}; "
                    f"valid: {', '.join(sorted(keys))}"
                )
            node, walked = node[part], walked + [part]
    if "experiment" not in config:
        raise UsageError(f"{path}: get_config() must set config.experiment")
    load_driver(config.experiment)


def maybe_initialize_distributed() -> None:
    """Initialises jax.distributed for multi-process launches; single-process runs skip it."""
    import jax  # noqa: PLC0415  (after flags, before any device use)

    if _COORDINATOR.value or _NUM_PROCESSES.value:
        if not (_COORDINATOR.value and _NUM_PROCESSES.value and _PROCESS_ID.value is not None):
            raise UsageError(
                "--coordinator_address, --num_processes and --process_id go together"
            )
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
        return
    env = os.environ
    slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in env
    tpu_pod = len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    if slurm or tpu_pod:
        jax.distributed.initialize()  # cluster environment auto-detected


def main(argv):
    del argv
    preemption.install()  # first: a SIGTERM from here on is honoured, not fatal
    import jax  # noqa: PLC0415
    from absl import logging  # noqa: PLC0415

    if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    if _TRACEBACK.value:
        os.environ[errors.TRACEBACK_ENV] = "1"
    if not errors.want_traceback():
        # An Orbax save that fails (a full disk) fails in several writer threads at once;
        # native code prints each one's echo through sys.excepthook. The run reports the
        # error once, in one line; the main thread never reaches this hook (cli catches).
        sys.excepthook = lambda *exc: None
        sys.unraisablehook = errors.quiet_unraisable  # the same writers' closed event loop

    if not _WORKDIR.value:
        raise UsageError("missing --workdir=<dir> (where checkpoints and metrics go)")
    maybe_initialize_distributed()
    config = _CONFIG.value
    workdir = os.path.abspath(_WORKDIR.value)
    _State.workdir = workdir
    driver = load_driver(config.experiment)
    rundir.set_extend(_EXTEND.value)
    from rlhf_jax.lab import protocol  # noqa: PLC0415

    protocol.apply(config)  # a lab phase samples under lab.protocol (a pipeline: per phase)
    rundir.preflight(config)  # before inheritance reads the checkpoint it names
    inherit.inherit_model(config, overrides=command_line_fields(sys.argv[1:]))
    inherit.check_context(config)
    with rundir.open_run(config, workdir, checked=True, **run_options(driver, workdir)):
        if jax.process_index() == 0:
            outputs = getattr(driver, "OUTPUTS",
                              "config.json, metrics.jsonl, tensorboard/, checkpoints/")
            print(
                f"experiment {config.experiment}: workdir {workdir} ({outputs}); "
                f"{jax.process_count()} process(es), {jax.device_count()} device(s) "
                f"[{jax.devices()[0].platform}]",
                flush=True,
            )
        driver.run(config, workdir)
    if preemption.requested():  # arrived after the last check: the run is complete
        raise preemption.Preempted("arrived as the run ended; everything is saved")


def command_line_fields(argv: list[str]) -> set[str]:
    """The config fields set on the command line: "--config.model.x=1" -> "model.x"."""
    return {a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")}


def run_options(driver, workdir: str) -> dict:
    """What a driver says about its workdir: fields left out of the fingerprint, and when its
    results bind the workdir (``committed(workdir)``) and may be extended."""
    out = {"exclude": tuple(getattr(driver, "FINGERPRINT_EXCLUDE", ()))}
    if getattr(driver, "RECOMPUTED", False):
        out["committed"] = lambda _: False  # its output is rewritten on every run
    elif hasattr(driver, "committed"):
        out["committed"] = driver.committed
    if hasattr(driver, "extend_check"):
        out["extend_check"] = lambda old, new, names: driver.extend_check(workdir, old, new,
                                                                          names)
    return out


class _State:
    workdir: str | None = None


def _report(exc: BaseException) -> None:
    """Prints the one-line error (and the traceback when asked for)."""
    if errors.want_traceback():
        traceback.print_exception(exc)
    line = errors.one_line(exc, _State.workdir)
    plain = errors.want_traceback() or isinstance(exc, errors._EXPECTED) or errors.no_space(exc)
    hint = "" if plain else f" [{errors.TRACEBACK_ENV}=1 shows the traceback]"
    print(f"error: {line}{hint}", file=sys.stderr, flush=True)


def cli(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        check_command_line(argv[1:])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        app.run(main, argv=argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except preemption.Preempted as e:
        print(f"\nSIGTERM: {e}; rerun the same command to resume.", file=sys.stderr, flush=True)
        return preemption.EXIT_CODE
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # noqa: BLE001  (every failure ends as one line)
        _report(e)
        if errors.no_space(e):
            # Threads of the writers below may still hold unwritable buffers; leaving now
            # spares the shutdown the hundreds of lines they would print.
            sys.stdout.flush()
            os._exit(1)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
