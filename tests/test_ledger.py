from pathlib import Path

from vidstyle.ledger import Ledger


def test_ledger_states_attempts_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    ledger.add_frames([(i, i * 2, i / 15) for i in range(5)])
    ledger.add_frames([(0, 99, 9.9)])  # re-adding on resume leaves the row alone
    assert ledger.frame(0).source_index == 0
    assert ledger.todo() == [0, 1, 2, 3, 4]
    ledger.mark_done(0, seed=7, backend="x", render_ms=12.5, info={"k": 1})
    ledger.mark_failed(3, "boom")
    assert ledger.counts() == {"pending": 3, "done": 1, "failed": 1}
    attempt = ledger.start_redo(0, {"sampling.denoise": 0.3}, kept_as="history/000000_a0.png")
    assert attempt == 1
    ledger.close()

    again = Ledger(path)
    row = again.frame(0)
    assert (row.status, row.attempt, row.overrides) == ("pending", 1, {"sampling.denoise": 0.3})
    assert again.attempts(0)[0]["kept_as"] == "history/000000_a0.png"
    assert again.todo() == [0, 1, 2, 3, 4]
