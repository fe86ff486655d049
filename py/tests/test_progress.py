"""Progress: without --tokens the ETA comes from how much of the input has been read."""
import io

from saeforge_py import progress


def test_eta_from_input_fraction(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    read = [0.5]  # as after a resume: half the input skipped before the first batch
    out = io.StringIO()
    p = progress.Progress(0, stream=out, fraction=lambda: read[0])
    now[0] += 50
    p.update(1000)  # the rate is measured from here, not from the start
    assert "ETA ?" in out.getvalue().splitlines()[-1]
    now[0] += 20
    read[0] = 0.6
    p.update(1000)  # 10% of the input in 20 s: the 40% left take 80 s
    last = out.getvalue().splitlines()[-1]
    assert "2,000 tokens (60% of the input)" in last and "ETA 1m20s" in last, last
    read[0] = 1.0
    p.close()
    assert "(100% of the input)" in out.getvalue().splitlines()[-1]
    assert "ETA 0m00s" in out.getvalue().splitlines()[-1]


def test_known_total_unchanged(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    p = progress.Progress(4000, stream=out, fraction=lambda: 0.9)  # a total wins over the input
    now[0] += 10
    p.update(1000)
    last = out.getvalue().splitlines()[-1]
    assert "1,000/4,000 tokens" in last and "ETA 0m30s" in last, last
