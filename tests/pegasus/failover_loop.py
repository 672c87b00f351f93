"""A write-and-read loop through pypegasus3 0.0.1.1 that outlives a node:
the test SIGKILLs a node holding primaries while this runs.

Usage: failover_loop.py META_ADDRESSES TABLE KEYS BOUND_S

Writes KEYS records (hash keys fo00000.., sort key "s") one at a time, a
few milliseconds apart, retrying each until it is acknowledged; reads an
earlier acknowledged record back after every few writes; then reads every
acknowledged record back. All of it within BOUND_S seconds. pypegasus3
recovers on its own: a timed-out request counts towards re-querying meta
(after 5 timeouts) and a refused one (ERR_INVALID_STATE,
ERR_OBJECT_NOT_FOUND) re-queries it at once, every 2 s at most.

Prints `ready`, then `acked N` after every PROGRESS_EVERY acknowledged
writes (the test kills the node on one of these), then `ok NAME` /
`FAIL NAME: DETAIL` lines and a summary line `acked=.. failed_attempts=..
read_errors=.. longest_gap_s=..` (the longest wait between two
acknowledgements: the client's recovery). Exits non-zero unless every record
was acknowledged and every acknowledged record reads back. Run it from a
scratch directory: the client logs to ./pegasus.log.
"""

import random
import sys
import time

from harness import ERR_OK, NOT_FOUND, Report, describe, expect_true, meta_list, run, settle, short, sleep

from pypegasus.pgclient import Pegasus  # noqa: E402

# pypegasus3's per-request timeout here (its default is 2000 ms): shorter,
# so that its 5-timeouts rule re-queries meta sooner after the kill.
CLIENT_TIMEOUT_MS = 1000
# Bound on one call beyond the client's own timeout.
CALL_BOUND_S = 5.0
# Pause between writes, so the kill lands mid-run.
WRITE_PAUSE_S = 0.005
# Pause after a failed attempt.
RETRY_PAUSE_S = 0.1
# A progress line every this many acknowledged writes.
PROGRESS_EVERY = 50
# An earlier record is read back after every this many writes.
READ_EVERY = 5


def key(index):
    return "fo%05d" % index


def value(index):
    return ("value-%d-" % index).encode() * 3


class Loop:
    def __init__(self, metas, table, keys, bound_s):
        self.metas = metas
        self.table = table
        self.keys = keys
        self.deadline = time.monotonic() + bound_s
        self.report = Report()
        self.client = None
        self.acked = []
        self.failed_attempts = 0
        self.read_errors = 0
        self.longest_gap_s = 0.0

    def left_s(self):
        return self.deadline - time.monotonic()

    async def main(self):
        report = self.report
        self.client = Pegasus(self.metas, self.table, CLIENT_TIMEOUT_MS)
        initialized = await settle(self.client.init(), 15.0)
        if initialized is not True:
            report.fail("init", "init() answered %s" % short(initialized))
            return report.summary()
        print("ready", flush=True)
        await report.check("writes_all_acknowledged", self.write_all, bound_s=max(self.left_s(), 1.0))
        await report.check("acknowledged_writes_read_back", self.read_all, bound_s=max(self.left_s(), 1.0))
        print(
            "acked=%d failed_attempts=%d read_errors=%d longest_gap_s=%.1f"
            % (len(self.acked), self.failed_attempts, self.read_errors, self.longest_gap_s),
            flush=True,
        )
        self.client.close()
        return report.summary()

    async def attempt(self, call):
        """One pypegasus3 call: (code, value), or None on any other outcome."""
        try:
            outcome = await settle(call(), CALL_BOUND_S)
        except Exception as error:  # a timeout or a dropped connection: retried
            return None, "%s: %s" % (type(error).__name__, error)
        if isinstance(outcome, tuple) and len(outcome) == 2:
            return outcome, None
        return None, describe(outcome)

    async def write_all(self):
        last_ack = time.monotonic()
        for index in range(self.keys):
            while True:
                expect_true(
                    self.left_s() > 0,
                    "%d of %d writes acknowledged when time ran out (%d failed attempts)"
                    % (len(self.acked), self.keys, self.failed_attempts),
                )
                outcome, _ = await self.attempt(lambda: self.client.set(key(index), "s", value(index)))
                if outcome is not None and outcome[0] == ERR_OK:
                    break
                self.failed_attempts += 1
                await sleep(RETRY_PAUSE_S)
            now = time.monotonic()
            self.longest_gap_s = max(self.longest_gap_s, now - last_ack)
            last_ack = now
            self.acked.append(index)
            if len(self.acked) % PROGRESS_EVERY == 0:
                print("acked %d" % len(self.acked), flush=True)
            if index % READ_EVERY == 0:
                await self.read_during_run(random.choice(self.acked))
            await sleep(WRITE_PAUSE_S)

    async def read_during_run(self, index):
        outcome, _ = await self.attempt(lambda: self.client.get(key(index), "s"))
        if outcome is None or outcome[0] not in (ERR_OK, NOT_FOUND):
            self.read_errors += 1
            return
        expect_true(
            outcome == (ERR_OK, value(index)),
            "acknowledged %s read back as %s during the run" % (key(index), short(outcome)),
        )

    async def read_all(self):
        for index in self.acked:
            while True:
                expect_true(self.left_s() > 0, "time ran out reading %s back" % key(index))
                outcome, _ = await self.attempt(lambda: self.client.get(key(index), "s"))
                if outcome is not None and outcome[0] in (ERR_OK, NOT_FOUND):
                    break
                self.read_errors += 1
                await sleep(RETRY_PAUSE_S)
            expect_true(
                outcome == (ERR_OK, value(index)),
                "acknowledged %s read back as %s" % (key(index), short(outcome)),
            )


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    bound_s = float(sys.argv[4])
    loop = Loop(meta_list(sys.argv[1]), sys.argv[2], int(sys.argv[3]), bound_s)
    run(loop.main, bound_s + 20.0)


if __name__ == "__main__":
    main()
