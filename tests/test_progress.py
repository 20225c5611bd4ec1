"""The sweep's progress line: job counts by state, best objective, time left; redrawn on a
terminal, a line per change in a log; and the line a real sweep with a failed job prints."""

import io
import re
import time

import pytest

from sce_sweeps.runtime import progress, record
from sce_sweeps.runtime.record import HEARTBEAT, Job, Manifest, RunState, write_json_atomic

T0 = 1_700_000_000.0


def _stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _job(num, state, objective=None, start=None, end=None):
    return Job(
        num,
        [f"loss.coeff={num / 4}"],
        f"hash{num}",
        str(num),
        state=state.value,
        objective=objective,
        submitted_at=_stamp(T0 + start) if start is not None else None,
        finished_at=_stamp(T0 + end) if end is not None else None,
    )


def _manifest(tmp_path, jobs):
    manifest = Manifest.create(tmp_path, "lambda_ablation", "local")
    manifest.jobs = jobs
    return manifest


JOBS = [
    _job(0, RunState.COMPLETED, 80.5, 0, 100),
    _job(1, RunState.FAILED, None, 0, 10),  # a failure does not count as a duration
    _job(2, RunState.COMPLETED, 82.25, 100, 200),
    _job(3, RunState.RUNNING, None, 200),
    _job(4, RunState.PENDING),
    _job(5, RunState.PENDING),
]


def test_line_counts_each_state_with_a_failed_job():
    line = progress.progress_line("lambda_ablation", JOBS, elapsed_s=260, now=T0 + 260)
    assert "[######------] 3/6 done (2 completed, 1 failed), 1 running, 2 pending" in line
    assert "best 82.25 (job #2)" in line
    # median duration 100 s: the running job has 40 s left, the 2 pending 100 s each, 1 slot
    assert "~4m00s left" in line and "4m20s elapsed" in line


def test_time_left_spreads_over_running_jobs_and_is_unknown_before_a_finish():
    jobs = [_job(0, RunState.COMPLETED, 1.0, 0, 60), _job(1, RunState.RUNNING, None, 60)]
    jobs += [_job(2, RunState.RUNNING, None, 60), _job(3, RunState.PENDING)]
    assert progress.time_left(jobs, now=T0 + 90) == pytest.approx((30 + 30 + 60) / 2)
    fresh = [_job(0, RunState.RUNNING, None, 0), _job(1, RunState.PENDING)]
    assert progress.time_left(fresh, now=T0 + 5) is None
    line = progress.progress_line("s", fresh, now=T0 + 5)
    assert "0/2 done (0 completed, 0 failed), 1 running, 1 pending; best -; time left: -" in line


def test_finished_sweep_has_no_time_left_and_pruned_and_unsubmitted_jobs_show():
    jobs = [_job(0, RunState.PRUNED, None, 0, 5), _job(1, RunState.NOT_SUBMITTED)]
    jobs += [_job(2, RunState.COMPLETED, float("nan"), 0, 9)]
    line = progress.progress_line("s", jobs, now=T0 + 10)
    assert "2/3 done (1 completed, 1 pruned, 0 failed), 0 running, 0 pending" in line
    assert ", 1 not submitted; best -" in line and "left" in line
    assert "left" not in progress.progress_line("s", jobs[:1] + jobs[2:], now=T0 + 10)


def test_log_gets_a_line_per_change_and_a_terminal_one_redrawn_line(tmp_path):
    log = io.StringIO()
    printer = progress.ProgressPrinter(log, interval_s=3600, tty=False)
    jobs = [_job(0, RunState.RUNNING, None, 0), _job(1, RunState.PENDING)]
    printer.update("s", jobs)
    printer.update("s", jobs)  # nothing changed, not due: no new line
    jobs[0] = _job(0, RunState.FAILED, None, 0, 3)
    printer.update("s", jobs)
    printer.finish("s", jobs)
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("sce_sweeps: s [") for line in lines)
    assert "1/2 done (0 completed, 1 failed), 0 running, 1 pending" in lines[1]

    term = io.StringIO()
    printer = progress.ProgressPrinter(term, tty=True)
    printer.update("s", jobs)
    printer.update("s", jobs)
    printer.clear()
    printer.finish("s", jobs)
    out = term.getvalue()
    assert out.count("\r\033[K") == 4 and out.endswith("~3s left, 0s elapsed\n")
    assert "\n" not in out[:-1]  # redrawn in place, one newline at the end


def test_show_keeps_one_printer_per_sweep(tmp_path, capsys):
    manifest = _manifest(tmp_path, [_job(0, RunState.COMPLETED, 70.0, 0, 10)])
    progress.show(manifest, final=True)
    err = capsys.readouterr().err
    assert "lambda_ablation [############] 1/1 done (1 completed, 0 failed)" in err
    assert "best 70 (job #0)" in err


@pytest.mark.slow
def test_sweep_with_a_failed_job_prints_its_progress(failing_point_sweep):
    """A real local sweep of two jobs, one at a time, one of which diverges (lr 1e12: NaN
    loss)."""
    proc = failing_point_sweep.proc
    lines = [line for line in proc.stderr.splitlines() if " done (" in line]
    assert lines, proc.stderr[-3000:]
    assert re.search(r"0/2 done \(0 completed, 0 failed\), 1 running, 1 pending", lines[0])
    final = lines[-1]
    assert "[############] 2/2 done (1 completed, 1 failed), 0 running, 0 pending" in final
    assert re.search(r"best \d+(\.\d+)? \(job #0\)", final) and "left" not in final


def test_running_jobs_epochs_give_a_time_left_before_any_job_finishes(tmp_path):
    """Job 0 has done a quarter of its steps in 60 s: 180 s left, then 240 s for the pending job."""
    run_dir = tmp_path / "0"
    record.beat(run_dir, 24, total=100)  # its 25th step of 100, as the trainer reports it
    assert record.done_share(run_dir) == 0.25
    assert record.done_share(tmp_path / "1") is None  # not started: no run dir yet
    jobs = [_job(0, RunState.RUNNING, None, 0), _job(1, RunState.PENDING)]
    assert progress.time_left(jobs, T0 + 60, {0: 0.25}) == pytest.approx(180 + 240)
    log = io.StringIO()
    printer = progress.ProgressPrinter(log, tty=False)
    printer.update("s", jobs, sweep_dir=tmp_path)
    assert "time left: -" not in log.getvalue() and " left, " in log.getvalue()


def test_a_job_whose_heartbeat_is_too_old_is_flagged_stalled(tmp_path):
    """Job 3 last beat 100 s ago (limit 30 s): flagged, and the time left is unknown; job 4
    beat just now; the default limit (no stall_after) is at least a few minutes."""
    jobs = [_job(0, RunState.COMPLETED, 80.5, 0, 100), _job(3, RunState.RUNNING, None, 200)]
    jobs += [_job(4, RunState.RUNNING, None, 200)]
    for num, age in ((3, 100.0), (4, 0.0)):
        beat = {"step": 12, "time": time.time() - age, "pid": 1, "host": "h", "longest_gap_s": 1}
        write_json_atomic(beat, tmp_path / str(num) / HEARTBEAT)
    log = io.StringIO()
    progress.ProgressPrinter(log, tty=False).update("s", jobs, sweep_dir=tmp_path, stall_after=30)
    line = log.getvalue()
    assert re.search(r"2 running \(1 stalled: job #3 for 1m4\ds\), 0 pending", line), line
    assert "time left: - (stalled)" in line
    log = io.StringIO()
    progress.ProgressPrinter(log, tty=False).update("s", jobs, sweep_dir=tmp_path)
    assert "stalled" not in log.getvalue()  # default limit: 300 s at least
