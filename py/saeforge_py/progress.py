"""A progress bar on stderr: done/total, rate and ETA; redrawn in place on a terminal."""
import sys
import time


def _dur(s):
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """total: the units expected (0 = unknown). fraction: without a total, a callable giving the
    part of the input read so far (or None), from which the ETA is estimated instead."""

    def __init__(self, total, unit="tokens", stream=None, fraction=None):
        self.total = total
        self.unit = unit
        self.fraction = fraction
        self.done = 0
        self.t0 = time.monotonic()
        self.last = 0.0
        # (time, fraction) at the first update: the rate is measured from there, so input a
        # resumed run skips without work does not count as progress made at that speed
        self.start = None
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if self.start is None and self.fraction is not None:
            self.start = (now, self.fraction())
        # a log file gets a line every 10 s, a terminal a redraw every 0.2 s
        if now - self.last >= (0.2 if self.tty else 10.0):
            self.last = now
            self._draw(now)

    def _eta_by_input(self, now):
        f = self.fraction() if self.fraction else None
        if f is None:
            return None, "?"
        if f >= 1.0:
            return f, _dur(0)
        if self.start is None or self.start[1] is None or f <= self.start[1] or now <= self.start[0]:
            return f, "?"
        return f, _dur((now - self.start[0]) * (1.0 - f) / (f - self.start[1]))

    def _draw(self, now, end="\r"):
        el = max(now - self.t0, 1e-9)
        rate = self.done / el
        if self.total:
            frac = min(self.done / self.total, 1.0)
            eta = _dur((self.total - self.done) / rate) if rate > 0 else "?"
            count = f"{self.done:,}/{self.total:,} {self.unit}"
        else:
            frac, eta = self._eta_by_input(now)
            count = f"{self.done:,} {self.unit}"
            if frac is not None:
                count += f" ({100 * frac:.0f}% of the input)"
        bar = "#" * int((frac or 0.0) * 30)
        line = f"[{bar:<30}] {count} {rate:,.0f} {self.unit}/s ETA {eta} elapsed {_dur(el)}"
        self.stream.write(line + (end if self.tty else "\n"))
        self.stream.flush()

    def close(self):
        self._draw(time.monotonic(), end="\n")
