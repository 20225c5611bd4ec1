"""The fault-injection suite's report: one row per fault, printed at the end of the session."""

from __future__ import annotations

from tests.faults.kill import TABLE


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest's hook)
    if not TABLE:
        return
    head = ("fault", "kill points tried", "runs lost", "runs resumable", "notes")
    rows = [head, *[(r.fault, str(r.tried), str(r.lost), str(r.resumable), r.notes) for r in TABLE]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    terminalreporter.section("fault injection")
    for row in rows:
        terminalreporter.write_line(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
