"""Never silent: with stderr not a terminal (a log, CI, nohup, SLURM), training prints one line
per epoch instead of hiding its progress bar."""

import re

import pytest

from tests.support import TINY, run_cli

pytestmark = pytest.mark.slow

LINE = re.compile(
    r"^epoch (\d+)/2: loss \d+\.\d{4}, \d+ img/s, kNN top-1 \d+\.\d\d%, \d+\.\d min left$"
)


def test_one_line_per_epoch_in_a_log(tmp_path, tiny_run):
    proc = tiny_run.proc  # its stderr was a pipe
    epochs = [int(m.group(1)) for line in proc.stderr.splitlines() if (m := LINE.match(line))]
    assert epochs == [1, 2], proc.stderr[-2000:]
    quiet = run_cli(
        *TINY, "tracker=none", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'quiet'}"
    )
    assert not any(LINE.match(line) for line in quiet.stderr.splitlines())
