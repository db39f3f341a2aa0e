"""pkcs12: writes the certificate, its chain and key as one PKCS#12 (PFX) file,
then checks and reloads the service.

For services and appliances that import a .p12/.pfx file. Settings and the grant it
needs: see README.md.
"""

import re
import shlex

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import (
    CertFormat,
    HookError_AccessDenied,
    HookError_Failed,
    HookError_InvalidArgument,
    HookError_Timeout,
)

# `alias` is read by the host: the friendlyName Java uses as the key entry's alias.
SETTINGS = {"path", "password", "legacy", "alias", "mode", "check", "reload"}


class WitWorld(wit_world.WitWorld):
    def deploy(self, bundle, settings):
        # Validate every setting before touching anything.
        cfg = read_settings(settings, SETTINGS)
        path = cfg.get("path", "")
        if not path.startswith("/"):
            raise Err(f"path must be an absolute path, got {path!r}")
        password = cfg.get("password", "")
        if not password:
            raise Err("password is required: the PKCS#12 file is encrypted with it")
        legacy = cfg.get("legacy", "false")
        if legacy not in ("true", "false"):
            raise Err(f'legacy must be "true" or "false", got {legacy!r}')
        fmt = CertFormat.PKCS12_LEGACY if legacy == "true" else CertFormat.PKCS12
        mode = parse_mode(cfg, "mode", "0600", holds_key=True)
        check = parse_command(cfg, "check")
        reload = parse_command(cfg, "reload")

        # The host builds the file and writes it; the key never passes through this hook.
        call(f"writing path {path}", host.write_cert, fmt, path, mode, password)

        # A failing check or reload fails the deployment: the host then puts the
        # previous file back and runs the commands again.
        done = [f"wrote {path}" + (" (legacy PKCS#12)" if legacy == "true" else "")]
        for name, argv in (("check", check), ("reload", reload)):
            if argv:
                run(name, argv)
                done.append(f"ran {shlex.join(argv)}")
        return "; ".join(done)


# Helpers (each stock hook carries its own copy, so it reads and builds on its own).

ERROR_KINDS = {
    HookError_AccessDenied: "not allowed by the grant",
    HookError_InvalidArgument: "invalid argument",
    HookError_Failed: "failed",
    HookError_Timeout: "timed out",
}


def call(what, fn, *args):
    """Calls a host function, turning its hook-error into a message that says what failed."""
    try:
        return fn(*args)
    except Err as e:
        kind = ERROR_KINDS.get(type(e.value), "error")
        raise Err(f"{what}: {kind}: {e.value.value}")


def read_settings(pairs, known):
    cfg = dict(pairs)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise Err(f"unknown setting {unknown[0]!r}; this hook takes {', '.join(sorted(known))}")
    return cfg


def parse_mode(cfg, name, default, holds_key):
    text = cfg.get(name, default)
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise Err(f"{name} must be octal permission bits like {default}, got {text!r}")
    mode = int(text, 8)
    # The same rules as the host's, checked here so a bad mode stops the hook before its
    # first write rather than halfway through.
    if mode & 0o022:
        raise Err(f"{name} {text} would let group or others write the file")
    if holds_key and mode & 0o007:
        raise Err(f"{name} {text} would give every user access to the private key; "
                  "use 0600 or 0640")
    if mode & 0o600 != 0o600:
        raise Err(f"{name} {text} must let the owner read and write the file, like {default}")
    return mode


def parse_command(cfg, name):
    if name not in cfg:
        return None
    try:
        argv = shlex.split(cfg[name])
    except ValueError as e:
        raise Err(f"{name} {cfg[name]!r} cannot be split into arguments: {e}")
    if not argv:
        raise Err(f"{name} is empty; remove it or give a command")
    return argv


def run(name, argv):
    """Runs a command from the grant's `commands`; a non-zero exit is an error."""
    command = shlex.join(argv)
    out = call(f"{name} command {command}", host.run_command, argv)
    if out.exit_code != 0:
        status = "was killed" if out.exit_code < 0 else f"exited with {out.exit_code}"
        raise Err(f"{name} command {command} {status}: {excerpt(out.stderr or out.stdout)}")


def excerpt(text, limit=300):
    text = " ".join(text.split()) or "no output"
    return text if len(text) <= limit else text[:limit] + "..."
