"""A progress bar on stderr: done/total, rate and ETA; redrawn in place on a terminal."""
import sys
import time


def _dur(s):
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, total, unit="tokens", stream=None):
        self.total = total
        self.unit = unit
        self.done = 0
        self.t0 = time.monotonic()
        self.last = 0.0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def update(self, n):
        self.done += n
        now = time.monotonic()
        # a log file gets a line every 10 s, a terminal a redraw every 0.2 s
        if now - self.last >= (0.2 if self.tty else 10.0):
            self.last = now
            self._draw(now)

    def _draw(self, now, end="\r"):
        el = max(now - self.t0, 1e-9)
        rate = self.done / el
        frac = min(self.done / self.total, 1.0) if self.total else 0.0
        bar = "#" * int(frac * 30)
        eta = _dur((self.total - self.done) / rate) if rate > 0 and self.total else "?"
        line = (f"[{bar:<30}] {self.done:,}/{self.total:,} {self.unit} {rate:,.0f} {self.unit}/s "
                f"ETA {eta} elapsed {_dur(el)}")
        self.stream.write(line + (end if self.tty else "\n"))
        self.stream.flush()

    def close(self):
        self._draw(time.monotonic(), end="\n")
