"""What the pypegasus3 scripts share: running a coroutine on Twisted's
reactor under a bound, checks that print one line each (`ok NAME` or
`FAIL NAME: DETAIL`), and turning pypegasus3's answers into values.

pypegasus3 0.0.1.1 answers a call in one of four shapes, all handled here:
a Deferred firing `(code, value)` for a reply it parsed; a Deferred firing
an `error_types` member when the reply's RPC-level error name is not
ERR_OK; a Deferred firing None when parsing the reply raised (its errback
logs to pegasus.log in the working directory and swallows the failure);
or a plain `(code, value)` tuple, without a Deferred, when it has no
session for the partition.
"""

import os
import sys
import traceback
import warnings

# Twisted warns on import that service_identity (TLS hostname checks) is
# missing; nothing here uses TLS.
warnings.filterwarnings("ignore", message="You do not have a working installation of the service_identity")

from twisted.internet import defer, reactor, task  # noqa: E402

from pypegasus.base.ttypes import error_types  # noqa: E402

ERR_OK = error_types.ERR_OK.value
# pypegasus3 turns the storage-level kNotFound (error 1) into this code.
NOT_FOUND = error_types.ERR_OBJECT_NOT_FOUND.value
# ... and the storage-level kIncomplete (error 7) into this one.
INCOMPLETE = error_types.ERR_INCOMPLETE_DATA.value
TIMEOUT = error_types.ERR_TIMEOUT.value

# Bound on one pypegasus3 call, beyond the client's own timeout (2 s by
# default): a call that never settles is a failure, never a hang.
CALL_BOUND_S = 10.0
# Bound on one check.
CHECK_BOUND_S = 60.0
# Margin past a script's bound before the watchdog ends the process.
WATCHDOG_MARGIN_S = 10.0


def sleep(seconds):
    """A Deferred that fires after `seconds` on the reactor."""
    return task.deferLater(reactor, seconds, lambda: None)


def short(value, limit=160):
    """`repr(value)`, cut to `limit` characters for a failure's line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % len(text)


def describe(result):
    """What a pypegasus3 answer that is not a `(code, value)` tuple means."""
    if isinstance(result, error_types):
        return "RPC-level error %s" % result.name
    if result is None:
        return "no parsable reply (pypegasus3 logged why in pegasus.log)"
    return "unexpected answer %s" % short(result)


async def settle(result, bound_s=CALL_BOUND_S):
    """The outcome of a pypegasus3 call: what its Deferred fires (at most
    `bound_s` seconds later) or the plain value it returned instead."""
    if isinstance(result, defer.Deferred):
        result.addTimeout(bound_s, reactor)
        return await result
    return result


async def answer(result, what, bound_s=CALL_BOUND_S):
    """`(code, value)` of a pypegasus3 call; fails `what` on any other shape."""
    outcome = await settle(result, bound_s)
    if not isinstance(outcome, tuple) or len(outcome) != 2:
        raise AssertionError("%s: %s" % (what, describe(outcome)))
    return outcome


def expect(actual, expected, what):
    if actual != expected:
        raise AssertionError("%s: expected %s, got %s" % (what, short(expected), short(actual)))


def expect_true(condition, what):
    if not condition:
        raise AssertionError(what)


def unexpected(error):
    """An exception a check did not expect, with where it was raised."""
    where = traceback.extract_tb(error.__traceback__)[-1]
    return "%s: %s (at %s:%d)" % (type(error).__name__, error, os.path.basename(where.filename), where.lineno)


class Report:
    """Runs checks and prints one line per check."""

    def __init__(self):
        self.failed = []
        self.passed = 0

    def ok(self, name):
        self.passed += 1
        print("ok %s" % name, flush=True)

    def fail(self, name, detail):
        self.failed.append(name)
        print("FAIL %s: %s" % (name, detail), flush=True)

    async def check(self, name, body, bound_s=CHECK_BOUND_S):
        """Runs `body()` (a coroutine function) bounded by `bound_s`;
        returns whether it passed."""
        running = defer.ensureDeferred(body())
        running.addTimeout(bound_s, reactor)
        try:
            await running
        except AssertionError as error:
            self.fail(name, str(error))
            return False
        except (defer.TimeoutError, defer.CancelledError):
            self.fail(name, "did not finish within %.0f s" % bound_s)
            return False
        except Exception as error:  # any other failure is this check's
            self.fail(name, unexpected(error))
            return False
        self.ok(name)
        return True

    def check_sync(self, name, body):
        """Runs `body()` (a plain function); returns whether it passed."""
        try:
            body()
        except AssertionError as error:
            self.fail(name, str(error))
            return False
        except Exception as error:  # any other failure is this check's
            self.fail(name, unexpected(error))
            return False
        self.ok(name)
        return True

    def summary(self):
        if self.failed:
            print("%d checks passed, %d failed: %s" % (self.passed, len(self.failed), " ".join(self.failed)), flush=True)
        else:
            print("%d checks passed" % self.passed, flush=True)
        return not self.failed


def run(main, bound_s):
    """Runs `main()` (a coroutine function returning whether everything
    passed) on the reactor, bounded by `bound_s`, and exits: 0 when it
    returned True, 1 otherwise, 3 when the watchdog had to end it."""
    outcome = {"code": 1}

    def start():
        running = defer.ensureDeferred(main())
        running.addTimeout(bound_s, reactor)

        def done(passed):
            outcome["code"] = 0 if passed else 1

        def failed(failure):
            print("FAIL script: %s" % failure.getTraceback().strip().splitlines()[-1], flush=True)

        running.addCallbacks(done, failed)
        running.addBoth(lambda _: reactor.stop())

    def watchdog():
        print("FAIL script: still running %.0f s past its bound" % WATCHDOG_MARGIN_S, flush=True)
        os._exit(3)

    reactor.callWhenRunning(start)
    reactor.callLater(bound_s + WATCHDOG_MARGIN_S, watchdog)
    reactor.run()
    sys.stdout.flush()
    # Scanner clears pypegasus3 sends wait for replies that never come (the
    # server must not answer them); exit without waiting on anything left.
    os._exit(outcome["code"])


def meta_list(argument):
    """`host:port,host:port` as pypegasus3 takes it."""
    return [address for address in argument.split(",") if address]
