import shlex

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import CertFormat


def reason(e):
    # A failed host call raises Err holding a HookError_AccessDenied, ..._InvalidArgument,
    # ..._Failed or ..._Timeout; its .value is the host's message.
    return getattr(e.value, "value", e.value)


class WitWorld(wit_world.WitWorld):
    def deploy(self, bundle, settings):
        cfg = dict(settings)
        path = cfg.get("path")
        if not path:
            raise Err("path is required")
        reload = shlex.split(cfg.get("reload", "/usr/bin/systemctl reload myservice"))
        try:
            host.write_cert(CertFormat.PEM_FULLCHAIN, path, 0o644, None)
        except Err as e:
            raise Err(f"writing {path}: {reason(e)}")
        try:
            out = host.run_command(reload)
        except Err as e:
            raise Err(f"running {reload[0]}: {reason(e)}")
        if out.exit_code != 0:
            raise Err(f"{reload[0]} exited with {out.exit_code}: {out.stderr.strip()}")
        return f"wrote {path}; ran {' '.join(reload)}"
