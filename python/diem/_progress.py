"""Progress displays for long computations: tqdm (terminal and Jupyter) when installed, else plain lines."""

import sys
import time


class Progress:
    """Nested tasks reported by the Rust core (laps, E-step chunks, training steps)."""

    def __init__(self):
        self._bars = []
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415

            self._tqdm = tqdm
        except ImportError:
            self._tqdm = None

    def start(self, label, total):
        if self._tqdm is not None:
            bar = self._tqdm(total=total, desc=label, leave=len(self._bars) == 0, position=len(self._bars))
        else:
            bar = {"label": label, "total": total, "n": 0, "t": time.monotonic()}
            print(f"{label}: 0/{total}", file=sys.stderr, flush=True)
        self._bars.append(bar)

    def advance(self, n):
        if not self._bars:
            return
        bar = self._bars[-1]
        if self._tqdm is not None:
            bar.update(n)
        else:
            bar["n"] += n
            now = time.monotonic()
            if now - bar["t"] > 10 or bar["n"] >= bar["total"]:
                bar["t"] = now
                print(f"{bar['label']}: {bar['n']}/{bar['total']}", file=sys.stderr, flush=True)

    def message(self, text):
        if self._bars and self._tqdm is not None:
            self._bars[-1].set_postfix_str(text)

    def finish(self):
        if not self._bars:
            return
        bar = self._bars.pop()
        if self._tqdm is not None:
            bar.close()
