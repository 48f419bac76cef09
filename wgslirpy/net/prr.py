"""Proportional Rate Reduction (RFC 6937, as updated by RFC 9937) for one loss recovery.

During fast/SACK recovery the congestion controller has set ``ssthresh``; PRR spreads the
window reduction over one round trip so that retransmissions and new data keep flowing
(no silence after a loss, no burst at the end). Pure, in bytes.

Per ACK the connection calls :meth:`Prr.on_ack` with the bytes the ACK newly delivered
(cumulatively + newly SACKed) and the pipe after processing it; :attr:`Prr.sndcnt` is
how much it may send now; :meth:`Prr.on_sent` counts what it sent.
"""

from __future__ import annotations

__all__ = ["Prr"]


class Prr:
    __slots__ = ("ssthresh", "recover_fs", "delivered", "out", "sndcnt", "mss")

    def __init__(self, *, ssthresh: int, pipe: int, mss: int) -> None:
        #: target window at the end of recovery (bytes).
        self.ssthresh = ssthresh
        #: RecoverFS: the pipe when recovery began (>= 1 so the ratio is defined).
        self.recover_fs = max(pipe, 1)
        #: prr_delivered: bytes delivered to the peer since recovery began.
        self.delivered = 0
        #: prr_out: bytes sent since recovery began.
        self.out = 0
        #: bytes that may be sent now (>= 0).
        self.sndcnt = mss  # the first retransmission goes out at once (RFC 6937 §3.1 note)
        self.mss = mss

    def on_ack(self, *, delivered: int, pipe: int) -> None:
        """RFC 6937 §3.1: recompute sndcnt for an ACK during recovery."""
        self.delivered += delivered
        if pipe > self.ssthresh:
            # proportional part: ceil(prr_delivered * ssthresh / RecoverFS) - prr_out
            snd = -((-self.delivered * self.ssthresh) // self.recover_fs) - self.out
        else:
            # slow-start reduction bound (SSRB): at most one MSS more than delivered
            limit = max(self.delivered - self.out, delivered) + self.mss
            snd = min(self.ssthresh - pipe, limit)
        self.sndcnt = snd if snd > 0 else 0

    def on_sent(self, n: int) -> None:
        self.out += n
        self.sndcnt = self.sndcnt - n if self.sndcnt > n else 0
