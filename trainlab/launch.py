"""`trainlab train --nproc N`: a thin launcher over torchrun (torch.distributed.run), run in this process.

    trainlab train --nproc 2 --recipe cpu-fast        # is
    torchrun --standalone --nproc-per-node 2 -m trainlab train --recipe cpu-fast --out runs/<stamped>

The run directory is fixed here, before the ranks start, so that they agree on it. When a rank fails,
torchrun stops the others; its report becomes one line that names the rank that failed first:
`trainlab: error: rank 1 failed (killed by SIGKILL)`. Several machines: torchrun itself, with --nnodes
and a rendezvous (docs/distributed.md).
"""

from __future__ import annotations

import logging
import signal

from trainlab.errors import TrainlabError

# A rank that loses a peer (its collective fails) exits with this code, so that the launcher names the
# rank that failed first, not the ones that failed because of it (trainlab.cli).
EXIT_LOST_PEER = 3


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option VALUE` or `option=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def worker_command(argv: list[str], out: str, resume: bool) -> list[str]:
    """torchrun's command for each rank: `-m trainlab train` with `argv` (the train command's arguments)
    less --nproc, and with --out set unless the run resumes (which names its directory)."""
    args = without_option(argv, "--nproc")
    if not resume and not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", out]
    return ["-m", "trainlab", *args]


def how_it_ended(exitcode: int) -> str:
    if exitcode == -signal.SIGTERM:
        return "stopped by torchrun"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def failures_in_order(failures: dict) -> list[tuple[int, int]]:
    """[(rank, exit code)] of torchrun's failures {rank: ProcessFailure}, the cause first: a rank killed
    by a signal other than the SIGTERM with which torchrun stops the survivors, then a rank's own
    error, then one that lost a peer (exit code 3, or SIGABRT: gloo aborts the process from C++ when a
    peer's connection closes, before Python can exit with 3), then the stopped ones; ties by time, then
    rank."""

    def cause(item):
        rank, failure = item
        code = failure.exitcode
        lost_peer = code in (EXIT_LOST_PEER, -signal.SIGABRT)
        kind = 3 if code == -signal.SIGTERM else 2 if lost_peer else 0 if code < 0 else 1
        return kind, failure.timestamp, rank

    return [(rank, failure.exitcode) for rank, failure in sorted(failures.items(), key=cause)]


def launch(nproc: int, command: list[str], torchrun_options: tuple[str, ...] = ("--standalone",)) -> None:
    """torchrun with `nproc` processes per node running `command` (["-m", module, args...] or
    [script, args...]); TrainlabError naming the failed rank when the job fails."""
    if nproc < 1:
        raise TrainlabError(f"--nproc {nproc}: expected 1 or more processes")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun's own log lines (which process it signals, its traceback of the failure) would bury the
    # one line that says what failed; the ranks' own output is untouched
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args([*torchrun_options, f"--nproc-per-node={nproc}", *command])
    try:
        run(args)
    except ChildFailedError as e:
        (rank, exitcode), *others = failures_in_order(e.failures)
        rest = "".join(f"; then rank {r} ({how_it_ended(code)})" for r, code in others)
        raise TrainlabError(f"rank {rank} failed ({how_it_ended(exitcode)}){rest}") from None
