"""An adversarial Python hook: tries to reach the machine through the WASI runtime that
componentize-py links (files, directories, environment, sockets, processes) instead of the
tlsward host functions.

deploy() returns Ok with a JSON object mapping each attempt to "refused: <type>: <message>"
or "ESCAPED: <what it got>", so a test can check that every attempt was refused.

With the setting `sleep = "SECONDS"` it only sleeps that long instead: a call into the WASI
runtime that the host's deadline must still bound.
"""

import json
import os
import time

import wit_world

# How much of whatever an attempt obtained goes into the report.
SHOWN = 120


def _passwd():
    with open("/etc/passwd") as f:
        return f.read()


def _environ():
    env = dict(os.environ)
    if not env:
        raise LookupError("the environment is empty")
    return env


def _socket():
    import socket

    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def _subprocess():
    import subprocess

    return subprocess.run(["id"], capture_output=True)


def _write_tmp():
    with open("/tmp/x", "w") as f:
        f.write("escaped\n")
    return "wrote /tmp/x"


ATTEMPTS = {
    "open /etc/passwd": _passwd,
    "listdir /": lambda: os.listdir("/"),
    "listdir .": lambda: os.listdir("."),
    "environ": _environ,
    "import socket": _socket,
    "subprocess id": _subprocess,
    "write /tmp/x": _write_tmp,
}


def _try(attempt):
    try:
        got = attempt()
    except BaseException as e:  # noqa: BLE001 - every way of failing is a refusal
        return f"refused: {type(e).__name__}: {e}"
    return f"ESCAPED: {repr(got)[:SHOWN]}"


class WitWorld(wit_world.WitWorld):
    def deploy(self, bundle, settings):
        seconds = dict(settings).get("sleep")
        if seconds is not None:
            time.sleep(float(seconds))
            return "slept"
        return json.dumps({name: _try(attempt) for name, attempt in ATTEMPTS.items()})
