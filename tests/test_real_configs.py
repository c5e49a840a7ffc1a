"""configs/real/: shapes equal the published HF configs, meshes fit, docstring memory is exact.

Also the Hugging Face import glue (rlhf_jax/models/hf_init.py) and the launch scripts:
`bash -n`, their --dry-run output, tpu_vm.sh's restart loop against a fake gcloud, and
slurm_gpu.sh's SIGTERM forwarding and requeue against a fake srun/scontrol.
"""

import dataclasses
import glob
import importlib.util
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from configs.real import common as real
from experiments import run as runner
from rlhf_jax import checkpoint, sharding
from rlhf_jax.data.tokenizer import Tokenizer
from rlhf_jax.models import ModelConfig, default_model_config, hf_export, hf_import, hf_init, init
from rlhf_jax.train import dpo, lm, ppo_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The published config.json files (fields the importer reads).
HF_CONFIGS = {
    "tinyllama": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                      hidden_size=2048, intermediate_size=5632, max_position_embeddings=2048,
                      num_attention_heads=32, num_hidden_layers=22, num_key_value_heads=4,
                      rms_norm_eps=1e-05, rope_scaling=None, rope_theta=10000.0,
                      tie_word_embeddings=False, torch_dtype="float32", vocab_size=32000),
    "gemma_2b": dict(architectures=["GemmaForCausalLM"], model_type="gemma", head_dim=256,
                     hidden_act="gelu", hidden_size=2048, intermediate_size=16384,
                     max_position_embeddings=8192, num_attention_heads=8, num_hidden_layers=18,
                     num_key_value_heads=1, rms_norm_eps=1e-06, rope_scaling=None,
                     rope_theta=10000.0, torch_dtype="bfloat16", vocab_size=256000),
    "llama2_7b": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                      hidden_size=4096, intermediate_size=11008, max_position_embeddings=4096,
                      num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=32,
                      rms_norm_eps=1e-05, rope_scaling=None, tie_word_embeddings=False,
                      torch_dtype="float16", vocab_size=32000),
}
FILES = sorted(f for f in glob.glob(os.path.join(ROOT, "configs", "real", "*_*.py"))
               if not f.endswith(("import_hf.py", "__init__.py")))


def _module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Model name in real.MODELS -> its prefix in configs/real/ file names.
FILE_MODEL = {"tinyllama": "tinyllama", "gemma_2b": "gemma2b", "llama2_7b": "llama2_7b"}


def test_config_files_one_per_model_and_phase():
    """Nine files (every model's sft, reward, ppo) and four more: dpo and grpo of the
    models EXTRA_PHASES names (tinyllama, gemma_2b)."""
    names = {os.path.basename(f)[:-3] for f in FILES}
    base = {f"{FILE_MODEL[m]}_{p}" for m in real.MODELS for p in real.PHASES}
    extra = {f"{FILE_MODEL[m]}_{p}" for p, models in real.EXTRA_PHASES.items() for m in models}
    assert len(base) == 9 and len(extra) == 4
    assert names == base | extra
    for path in FILES:  # each file is the phase_config its name says
        model = {v: k for k, v in FILE_MODEL.items()}[os.path.basename(path)[:-3].rsplit(
            "_", 1)[0]]
        phase = os.path.basename(path)[:-3].rsplit("_", 1)[1]
        assert _module(path).get_config("v4-32") == real.phase_config(model, phase, "v4-32")


@pytest.mark.parametrize("model", sorted(real.MODELS))
def test_model_shapes_equal_config_from_hf(model):
    expected = hf_import.config_from_hf(HF_CONFIGS[model], dtype="bfloat16",
                                        param_dtype="float32")
    assert ModelConfig.from_config(real.model_config(model)) == expected


@pytest.mark.parametrize("hardware", sorted(real.HARDWARE))
@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.basename(p)[:-3])
def test_config_loads_validates_and_fits_its_mesh(path, hardware):
    rel = os.path.relpath(path, ROOT)
    runner.check_command_line([f"--config={rel}:{hardware}"])  # loads, finds the driver
    config = _module(path).get_config(hardware)
    cfg = ModelConfig.from_config(config.model)
    cfg.validate()
    assert real.mesh_size(config) == real.HARDWARE[hardware]["devices"]
    split = real.batch_devices(config)
    if config.experiment == "ppo":
        ppo_config.check_ppo_config(config.ppo)
        assert config.ppo.rollout_batch_size // config.ppo.num_minibatches % split == 0
        assert config.data.prompt_len + config.ppo.max_new_tokens <= cfg.max_len
        if config.ppo.advantage == "grpo":  # a rollout is whole groups of samples
            assert config.ppo.group_size >= 2
            assert config.ppo.rollout_batch_size % config.ppo.group_size == 0
            assert config.ppo.kl_in_loss and config.ppo.kl_estimator == "k3"
            assert "value_from" not in config
        else:
            assert config.ppo.advantage == "gae" and config.value_from == "reward"
    else:
        assert config.experiment in ("sft", "reward", "dpo")
        # dpo, like reward, counts pairs: a microbatch of pairs splits over the devices
        assert config.batch_size // config.optim.accumulation_steps % split == 0
        assert config.data.seq_len <= cfg.max_len
        assert config.data.source == "jsonl"
    if config.experiment == "dpo":
        dpo.objective(config.dpo.beta, config.dpo.kind, config.dpo.label_smoothing)  # valid
        assert config.eval.batch_size % split == 0


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.basename(p)[:-3])
def test_docstring_memory_figures_equal_memory_plan(path):
    module = _module(path)
    plans = real.memory_plans(module.get_config)
    assert sorted(plans) == sorted(real.HARDWARE)
    for hardware, plan in plans.items():
        line = real.plan_line(hardware, plan)
        assert line in module.__doc__, f"{path} docstring lacks the recomputed line:\n{line}"
        assert plan["num_devices"] == real.HARDWARE[hardware]["devices"]
        # Room for what the estimate leaves out (XLA temporaries, the sampler's cache).
        assert plan["total"] < 0.9 * real.HARDWARE[hardware]["hbm_gib"] * 2**30


def test_config_argument_errors():
    with pytest.raises(ValueError, match="'v3-8' is not a hardware preset; pass one of"):
        real.phase_config("tinyllama", "sft", "v3-8")
    with pytest.raises(ValueError, match="unknown phase 'a2c'; expected one of"):
        real.phase_config("tinyllama", "a2c", "v4-32")
    for phase in ("dpo", "grpo"):
        with pytest.raises(ValueError, match=f"phase '{phase}' has no real config for model "
                           "'llama2_7b'; it exists for tinyllama, gemma_2b"):
            real.phase_config("llama2_7b", phase, "v4-32")
    with pytest.raises(ValueError, match="unknown model 'gpt2'"):
        real.model_config("gpt2")
    import_hf = _module(os.path.join(ROOT, "configs", "real", "import_hf.py"))
    with pytest.raises(ValueError, match="'gpt2' is not a model; pass one of"):
        import_hf.get_config("gpt2")
    assert import_hf.get_config("gemma_2b").model.vocab_size == 256000
    assert "model" in import_hf.get_config()  # placeholders: the folder decides the model


# -- Hugging Face import -----------------------------------------------------------------------

TINY = dict(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
            mlp_dim=48, max_len=64, norm_eps=1e-5, tied_embeddings=False)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    tok = Tokenizer.train([f"the number {i} follows {i - 1}" for i in range(200)], 48)
    tok.save(str(root / "tok.model"))
    cfg = ModelConfig(**TINY)
    _, params = init(cfg, jax.random.key(0))
    folder = str(root / "tiny")
    hf_export.export_hf(folder, cfg, params, tokenizer_path=str(root / "tok.model"),
                        architecture="LlamaForCausalLM")
    return folder, cfg, params


def _mesh():
    return sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})


def test_import_writes_what_init_from_reads(hf_folder, tmp_path):
    folder, cfg, params = hf_folder
    work = str(tmp_path / "base")
    model = default_model_config(**TINY)
    rules = sharding.DEFAULT_RULES
    assert hf_init.import_checkpoint(folder, work, model, _mesh(), rules) == "imported"
    assert open(os.path.join(work, "tokenizer.model"), "rb").read() == \
        open(os.path.join(folder, "tokenizer.model"), "rb").read()
    _, restored = lm.load_params(work, model, _mesh(), rules)  # what SFT's init_from does
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert hf_init.import_checkpoint(folder, work, model, _mesh(), rules) == "already imported"
    other = str(tmp_path / "other_hf")
    os.symlink(folder, other)
    with pytest.raises(ValueError, match=r"already holds a checkpoint \(from .*not an import"):
        hf_init.import_checkpoint(other, work, model, _mesh(), rules)


def test_import_errors_name_the_field_or_path(hf_folder, tmp_path):
    folder, cfg, _ = hf_folder
    rules, work = sharding.DEFAULT_RULES, str(tmp_path / "w")
    wrong = default_model_config(**{**TINY, "norm_eps": 1e-6, "num_kv_heads": 4})
    with pytest.raises(ValueError, match=r"(?s)does not describe config.model:.*"
                       r"model.num_kv_heads: config has 4, the checkpoint has 2.*"
                       r"model.norm_eps: config has 1e-06, the checkpoint has 1e-05"):
        hf_init.import_checkpoint(folder, work, wrong, _mesh(), rules)
    with pytest.raises(ValueError, match="config.hf_path is empty"):
        hf_init.import_checkpoint("", work, default_model_config(**TINY), _mesh(), rules)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        hf_init.import_checkpoint(str(tmp_path / "nope"), work,
                                  default_model_config(**TINY), _mesh(), rules)
    assert not os.path.isdir(checkpoint.checkpoint_dir(work)) or not os.listdir(
        checkpoint.checkpoint_dir(work))


def test_import_rejects_tokenizer_larger_than_vocab(tmp_path):
    tok = Tokenizer.train([f"item {i} costs {3 * i} coins" for i in range(300)], 64)
    tok.save(str(tmp_path / "tok.model"))
    cfg = ModelConfig(**{**TINY, "vocab_size": 16})  # fewer ids than the tokenizer's pieces
    _, params = init(cfg, jax.random.key(1))
    folder = str(tmp_path / "hf")
    hf_export.export_hf(folder, cfg, params, tokenizer_path=str(tmp_path / "tok.model"),
                        architecture="LlamaForCausalLM")
    model = default_model_config(**dataclasses.asdict(cfg))
    with pytest.raises(ValueError,
                       match=r"tokenizer.model has 2\d pieces but model.vocab_size is 16"):
        hf_init.import_checkpoint(folder, str(tmp_path / "w"), model, _mesh(),
                                  sharding.DEFAULT_RULES)


# -- launch scripts ----------------------------------------------------------------------------

TPU = os.path.join(ROOT, "launch", "tpu_vm.sh")
SLURM = os.path.join(ROOT, "launch", "slurm_gpu.sh")


def test_scripts_parse():
    scripts = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")))
    assert TPU in scripts and SLURM in scripts
    for script in scripts:
        out = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_tpu_dry_run_prints_create_install_and_run(tmp_path):
    out = subprocess.run(
        ["bash", TPU, "--name", "rl", "--zone", "us-central2-b", "--type", "v4-32", "--queued",
         "--spot", "--repo", str(tmp_path), "--dry-run", "--",
         "--config=configs/real/tinyllama_sft.py:v4-32", "--workdir=/gcs/b/sft"],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    cmds = [line for line in out.stderr.splitlines() if line.startswith("+ ")]
    assert cmds[0].startswith("+ gcloud compute tpus tpu-vm describe rl --zone=us-central2-b")
    assert cmds[1] == ("+ gcloud compute tpus queued-resources create rl --node-id=rl "
                       "--zone=us-central2-b --accelerator-type=v4-32 "
                       "--runtime-version=tpu-ubuntu2204-base --spot")
    assert "--worker=all" in cmds[3] and "pip\\ install" in cmds[4]
    assert cmds[-1] == ("+ gcloud compute tpus tpu-vm ssh rl --worker=all --zone=us-central2-b "
                        "--command=cd\\ ~/rlhf_jax\\ \\&\\&\\ python3\\ -m\\ experiments.run\\ "
                        "--config=configs/real/tinyllama_sft.py:v4-32\\ --workdir=/gcs/b/sft")
    missing = subprocess.run(["bash", TPU, "--zone", "z", "--type", "v4-32", "--", "--x"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "missing --name (or TPU_NAME)" in missing.stderr
    bad = subprocess.run(["bash", TPU, "--colour", "red"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --colour" in bad.stderr


FAKE_GCLOUD = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE/log"
case "$*" in
  *"tpu-vm describe"*) s=$(cat "$FAKE/state"); [[ $s == NOT_FOUND ]] && exit 1; echo "$s" ;;
  *"tpu-vm create"*) echo READY > "$FAKE/state" ;;
  *"tpu-vm delete"*) echo NOT_FOUND > "$FAKE/state" ;;
  *experiments.run*)
    code=$(head -n 1 "$FAKE/codes"); sed -i 1d "$FAKE/codes"
    if [[ $code == preempt ]]; then echo PREEMPTED > "$FAKE/state"; exit 255; fi
    exit "$code" ;;
esac
exit 0
"""


def _fake_tpu(tmp_path, codes):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "gcloud").write_text(FAKE_GCLOUD)
    (fake / "gcloud").chmod(0o755)
    (fake / "state").write_text("NOT_FOUND\n")
    (fake / "codes").write_text("\n".join(codes) + "\n")
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "FAKE": str(fake),
           "TPU_POLL_SECONDS": "0"}
    out = subprocess.run(["bash", TPU, "--name", "rl", "--zone", "z", "--type", "v4-32",
                          "--repo", str(tmp_path), "--", "--config=c.py", "--workdir=/w"],
                         env=env, capture_output=True, text=True, timeout=60)
    log = (fake / "log").read_text().splitlines()
    return out, log


def _count(log, word):
    return sum(word in line for line in log)


def test_tpu_restarts_after_sigterm_exit_and_preemption(tmp_path):
    out, log = _fake_tpu(tmp_path, ["143", "preempt", "0"])
    assert out.returncode == 0, out.stderr
    assert _count(log, "experiments.run") == 3  # the same command, three times
    assert _count(log, "tpu-vm create") == 2  # once at the start, once after preemption
    assert _count(log, "tpu-vm delete") == 1
    assert _count(log, "pip install") == 2  # a reused slice is not reinstalled
    assert "restart 1 of 20" in out.stderr and "restart 2 of 20" in out.stderr


def test_tpu_does_not_restart_a_real_failure(tmp_path):
    out, log = _fake_tpu(tmp_path, ["1"])
    assert out.returncode == 1
    assert _count(log, "experiments.run") == 1
    assert "failed with status 1 on a healthy slice; not restarting" in out.stderr


def test_slurm_dry_run_prints_srun():
    out = subprocess.run(["bash", SLURM, "--config=configs/real/llama2_7b_sft.py:gpu-8",
                          "--workdir=/shared/sft"], env={**os.environ, "DRY_RUN": "1"},
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "+ srun --kill-on-bad-exit=1 --ntasks-per-node=1 python -m experiments.run "
        "--config=configs/real/llama2_7b_sft.py:gpu-8 --workdir=/shared/sft")
    text = open(SLURM).read()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:TERM@120" in text
    empty = subprocess.run(["bash", SLURM], capture_output=True, text=True)
    assert empty.returncode == 2 and "missing experiments.run arguments" in empty.stderr


def test_slurm_forwards_sigterm_and_requeues(tmp_path):
    # A fake srun that stands for the run: on SIGTERM it "checkpoints" and exits 143.
    (tmp_path / "srun").write_text(
        "#!/usr/bin/env bash\ntrap 'echo checkpointed > \"$FAKE/ckpt\"; exit 143' TERM\n"
        "touch \"$FAKE/started\"\nwhile true; do sleep 0.1; done\n")
    (tmp_path / "scontrol").write_text("#!/usr/bin/env bash\necho \"$*\" > \"$FAKE/scontrol\"\n")
    for f in ("srun", "scontrol"):
        (tmp_path / f).chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE": str(tmp_path),
           "SLURM_JOB_ID": "4242", "RLHF_JAX_DIR": ROOT}
    proc = subprocess.Popen(["bash", SLURM, "--config=c.py", "--workdir=/w"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.time() - t0 < 30
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert (tmp_path / "ckpt").read_text().strip() == "checkpointed"
    assert (tmp_path / "scontrol").read_text().strip() == "requeue 4242"
