"""The full lab pipeline with one annotator panel preset, for the comparison table.

    python -m experiments.run --config=configs/lab/pipeline.py:<preset> \
        --workdir=workdirs/lab/<preset>

<preset> is the panel: unbiased, human_like (default), length, agreement,
flattery, confidence, caution or no_verification. Everything else is the
quickstart's sizes (configs/quickstart.py), so the presets differ only in who
labels the comparisons. About the quickstart's wall time each on a 2-core CPU.
"""

from configs import quickstart


def get_config(arg=None):
    return quickstart.get_config(arg)
