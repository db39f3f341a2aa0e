"""http-appliance: uploads the certificate and key to an appliance's REST API, activates
it and waits for the activation job to finish.

It speaks a generic appliance API (see README.md); adapt the three steps in `deploy` to
your vendor's API. Settings and the grant it needs: see README.md.
"""

import json
import re
import time
from urllib.parse import quote, urlsplit

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import (
    CertFormat,
    HookError_AccessDenied,
    HookError_Failed,
    HookError_InvalidArgument,
    HookError_Timeout,
    HttpRequest,
    LogLevel,
)

SETTINGS = {"url", "token", "format", "password", "poll_attempts", "poll_interval"}
# format setting -> (what the host converts to, the upload's Content-Type)
FORMATS = {
    "pkcs12": (CertFormat.PKCS12, "application/x-pkcs12"),
    "pem": (CertFormat.PEM_COMBINED, "application/x-pem-file"),
}


class WitWorld(wit_world.WitWorld):
    def deploy(self, bundle, settings):
        # Validate every setting before sending anything.
        cfg = read_settings(settings, SETTINGS)
        url = parse_url(cfg)
        token = cfg.get("token", "")
        if not token:
            raise Err("token is required: the appliance API's Bearer token")
        fmt_name = cfg.get("format", "pkcs12")
        if fmt_name not in FORMATS:
            raise Err(f'format must be "pkcs12" or "pem", got {fmt_name!r}')
        fmt, content_type = FORMATS[fmt_name]
        password = cfg.get("password") or None
        if fmt_name == "pkcs12" and not password:
            raise Err('password is required with format "pkcs12": it encrypts the upload')
        if fmt_name == "pem" and password:
            host.log(LogLevel.WARN, 'password is ignored with format "pem"')
            password = None
        attempts = parse_number(cfg, "poll_attempts", "30", 1, 1000, int)
        interval = parse_number(cfg, "poll_interval", "1", 0, 10, float)
        if not bundle.key_pem:
            raise Err("this hook uploads the private key: its grant needs key_access = true")

        api = Api(url, token)

        # 1. Upload the certificate, chain and key.
        body = call(f"converting to {fmt_name}", host.convert, fmt, password)
        headers = [("Content-Type", content_type)]
        if password:
            headers.append(("X-Passphrase", password))
        cert_id = api.call("POST", "/api/v1/certificates", "id", body, headers)
        host.log(LogLevel.INFO, f"uploaded certificate {bundle.sha256[:16]} as {cert_id}")

        # 2. Activate it: the appliance answers with a job to watch.
        job = api.call("POST", f"/api/v1/certificates/{quote(cert_id, safe='')}/activate", "job")
        host.log(LogLevel.INFO, f"activation job {job} started")

        # 3. Poll the job until it is done or failed.
        state = None
        for attempt in range(1, attempts + 1):
            status = api.call("GET", f"/api/v1/jobs/{quote(job, safe='')}")
            state = status.get("state")
            message = str(status.get("message") or "").strip()
            if state == "done":
                return f"activated certificate {cert_id}"
            if state == "failed":
                raise Err(f"activation job {job} failed: {message or 'no message'}")
            if state not in ("pending", "running"):
                raise Err(f"activation job {job}: unexpected state {state!r}")
            host.log(LogLevel.DEBUG, f"activation job {job} is {state} (check {attempt} of {attempts})")
            if attempt < attempts:
                time.sleep(interval)
        raise Err(f"activation job {job} still {state} after {attempts} checks "
                  f"{interval:g} s apart; certificate {cert_id} is uploaded but may not be active")


class Api:
    """The appliance's JSON API, through the host's `http` (https, hosts in the grant)."""

    def __init__(self, url, token):
        self.url = url
        self.auth = ("Authorization", f"Bearer {token}")

    def call(self, method, path, field=None, body=b"", headers=()):
        """Sends one request; returns the JSON answer, or its non-empty `field`."""
        what = f"{method} {path}"
        request = HttpRequest(
            method=method,
            url=self.url + path,
            headers=[self.auth, ("Accept", "application/json"), *headers],
            body=body,
        )
        response = call(what, host.http, request)
        if not 200 <= response.status < 300:
            raise Err(f"{what}: HTTP {response.status}: {excerpt(response.body)}")
        try:
            answer = json.loads(response.body)
        except ValueError:
            raise Err(f"{what}: HTTP {response.status} but not JSON: {excerpt(response.body)}")
        if not isinstance(answer, dict):
            raise Err(f"{what}: expected a JSON object, got {excerpt(response.body)}")
        if field is None:
            return answer
        value = answer.get(field)
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
            raise Err(f"{what}: the answer has no {field!r}: {excerpt(response.body)}")
        return str(value)


def parse_url(cfg):
    url = cfg.get("url", "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise Err(f"url must be the appliance's https://host:port, got {url!r}")
    if parts.username or parts.query or parts.fragment:
        raise Err("url must not hold credentials, a query or a fragment; use token")
    return url


def parse_number(cfg, name, default, low, high, kind):
    text = cfg.get(name, default)
    pattern = r"[0-9]+" if kind is int else r"[0-9]+(\.[0-9]+)?"
    if not re.fullmatch(pattern, text) or not low <= kind(text) <= high:
        unit = "a whole number" if kind is int else "a number of seconds"
        raise Err(f"{name} must be {unit} from {low} to {high}, got {text!r}")
    return kind(text)


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


def excerpt(data, limit=300):
    text = " ".join(data.decode("utf-8", "replace").split()) or "empty body"
    return text if len(text) <= limit else text[:limit] + "..."
