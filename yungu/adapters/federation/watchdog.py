"""The lease watchdog: a delegated job stops when its lease expires, even if its platform is down.

The peer runs a delegated command wrapped in a few lines of POSIX ``sh`` (nothing else is
needed inside a sandbox): the command runs as a child; a watcher re-reads the stop time
(Unix seconds, the peer's clock) once a second from the lease file and, once it has passed,
stops the command's whole process tree and exits 75: it freezes the tree first (SIGSTOP), then
sends SIGTERM and SIGCONT, and SIGKILL after ``kill_grace_s`` — freezing first matters, since a
shell whose child was killed before the shell itself would run its next command (a job's
``sleep 10; echo done >> out`` would still write "done").
The platform process writes the file on every renewal; if the platform is killed, renewals
stop, the time passes and the job stops on its own — which is what lets the origin re-place
it at lease expiry without a second running copy.

The lease file is looked up in the job's working directory first (``.yungu-lease``: the run
directory, which a sandbox binds), then at the absolute path given; without either the stop
time written into the wrapper at delegation applies (a lease is never extended by default).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LEASE_EXPIRED_EXIT = 75
LOCAL_NAME = ".yungu-lease"

_TEMPLATE = """__yf_kids() {{ for __s in /proc/[0-9]*/stat; do {{ read -r __pid __comm __st __pp __rest < "$__s"; }} 2>/dev/null && [ "$__pp" = "$1" ] && echo "$__pid"; done; }}
__yf_all() {{ echo "$1"; for __c in $(__yf_kids "$1"); do __yf_all "$__c"; done; }}
__yf_stop() {{ __yf_l=$(__yf_all "$1"); kill -STOP $__yf_l 2>/dev/null; kill -TERM $__yf_l 2>/dev/null; kill -CONT $__yf_l 2>/dev/null; }}
/bin/sh -c {command} &
__yf_p=$!
( __yf_u={initial}
  while :; do
    sleep 1
    {{ read -r __yf_v < {local} || read -r __yf_v < {absolute}; }} 2>/dev/null && [ -n "$__yf_v" ] && __yf_u=$__yf_v
    if [ "$(( $(date +%s) + {offset} ))" -ge "$__yf_u" ]; then
      echo "yungu: federation lease expired at $__yf_u; stopping the job" >&2
      : > .yungu-lease-expired 2>/dev/null
      __yf_l=$(__yf_all "$__yf_p"); __yf_stop "$__yf_p"; sleep {grace}; kill -KILL $__yf_l $(__yf_all "$__yf_p") 2>/dev/null
      exit 0
    fi
  done ) &
__yf_w=$!
trap '__yf_stop "$__yf_p"' TERM INT
wait "$__yf_p"; __yf_rc=$?
kill -KILL $(__yf_all "$__yf_w") 2>/dev/null
[ -e .yungu-lease-expired ] && exit {expired}
exit "$__yf_rc"
"""


def quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def wrap(command: str, *, lease_file: Path, stop_at_epoch: int, clock_offset_s: int = 0,
         kill_grace_s: int = 2) -> str:
    return _TEMPLATE.format(command=quote(command), initial=int(stop_at_epoch), local=quote(LOCAL_NAME),
                            absolute=quote(str(lease_file)), offset=int(clock_offset_s), grace=int(kill_grace_s),
                            expired=LEASE_EXPIRED_EXIT)


def write_lease(path: Path, stop_at_epoch: int) -> None:
    """Atomically (tmp + rename) write the stop time; the watchdog reads it every second.

    The file is readable by all (0644) whatever the platform's umask (077): in a sandbox the
    watchdog runs as the tenant's uid and reads the copy in the run directory; unreadable, it
    would keep the stop time of the delegation and stop every job one lease after its start.
    The run directory is the tenant's, so the temporary file is created anew, never followed
    (``O_EXCL | O_NOFOLLOW``): a link planted there cannot make the platform write elsewhere."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, f"{int(stop_at_epoch)}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
