"""systemd's notify protocol, so the agent can run as a ``Type=notify`` unit with a watchdog.

When systemd starts a service with ``NotifyAccess`` it sets ``NOTIFY_SOCKET`` (a unix datagram
socket path, or an abstract one starting with ``@``) and, with ``WatchdogSec=``,
``WATCHDOG_USEC``. The agent sends ``READY=1`` once it serves and ``WATCHDOG=1`` at half the
watchdog interval from the loop that does its work, so systemd restarts an agent whose loop hangs.
Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. The protocol is sd_notify(3):
newline-separated ``KEY=VALUE`` assignments in one datagram.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

NOTIFY_ENV = "NOTIFY_SOCKET"
WATCHDOG_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; False when not run by systemd.

    A send that fails (the socket went away) is not an error for the agent: it returns False.
    """
    environ = os.environ if env is None else env
    address = environ.get(NOTIFY_ENV)
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None without a watchdog.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for; another process
    (a child the agent started) gets None.
    """
    environ = os.environ if env is None else env
    raw = environ.get(WATCHDOG_ENV)
    if not raw:
        return None
    pid = environ.get(WATCHDOG_PID_ENV)
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None
