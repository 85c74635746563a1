"""The etcd v3 Datastore, over etcd's HTTP/JSON gateway (``etcd3gw`` client + ``requests``).

Mapping: key = :func:`key_for`; value = the resource as JSON without resourceVersion;
resourceVersion = the key's ``mod_revision``; ``list`` revision = the range response header's
revision. Writes are transactions: create = ``txn(version == 0)``, update =
``txn(mod_revision == rv)``, CAS delete = ``txn(mod_revision == rv)``. Watch drives the
gateway's streaming ``/v3/watch`` directly (``start_revision = from_revision + 1``,
``prev_kv``) and maps etcd's ``compact_revision`` cancel to :class:`Compacted`.

Invariants: every network failure (refused, timed out, TLS, 5xx) surfaces as
:class:`Unavailable` within ``timeout`` seconds per endpoint (connect 2 s, read 5 s by
default); endpoints are tried in order and the last good one is preferred. After a member
failed, a request goes to another member only once that member names a live leader
(``maintenance/status``), so a leader loss costs about one election, not a read timeout. No
etcd3gw or requests exception escapes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from etcd3gw import exceptions as gw_exc
from etcd3gw.client import Etcd3Client

from pycalico.datastore._common import (
    encode as encode_obj,
)
from pycalico.datastore._common import (
    ident,
    obj_key,
    required_revision,
    stamp_new,
    stamp_update,
    with_revision,
)
from pycalico.datastore.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    EventType,
    ListResult,
    NotFound,
    Resource,
    Unavailable,
    WatchEvent,
    key_for,
    prefix_for,
)

_WATCH_READ = 30.0  # idle read timeout of a watch stream before it is re-established


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _range_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return _b64(b"\0")
    raw[-1] += 1
    return _b64(bytes(raw))


def _kv_obj(kv: dict[str, Any]) -> Resource:
    obj: Resource = json.loads(_unb64(kv.get("value", "")) or b"{}")
    obj.setdefault("metadata", {})
    return with_revision(obj, int(kv["mod_revision"]))


class EtcdDatastore:
    """Datastore on etcd v3. ``endpoints``: URLs ``http(s)://host:port``."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise Unavailable("etcd: no endpoints configured")
        for setting, path in (("etcdCACertFile", ca_cert), ("etcdCertFile", cert),
                              ("etcdKeyFile", key)):  # fmt: skip
            if path:
                _check_readable(setting, path)
        self.endpoints = list(endpoints)
        self._timeout = (connect_timeout, timeout)
        self._verify: str | bool = ca_cert or True
        self._cert = (cert, key) if cert and key else None
        self._clients = [self._client(ep, ca_cert, cert, key) for ep in self.endpoints]
        self._current = 0
        self._member_ids: dict[int, str] = {}  # endpoint index -> member ID (response headers)
        self._suspect: str | None = None  # member ID of the endpoint that last failed
        self._closed = False
        self._streams: set[requests.Response] = set()
        self._lock = threading.Lock()
        self._immutable: dict[tuple[str, int], Resource] = {}

    def _client(self, ep: str, ca: str | None, cert: str | None, key: str | None) -> Etcd3Client:
        u = urlsplit(ep)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise Unavailable(f"etcd endpoint {ep!r}: expected http(s)://host:port")
        session = requests.Session()
        session.trust_env = False  # env CA bundles would override the configured CA
        session.verify = self._verify
        if self._cert:
            session.cert = self._cert
        return Etcd3Client(
            host=u.hostname,
            port=u.port or 2379,
            protocol=u.scheme,
            ca_cert=ca,
            cert_key=key,
            cert_cert=cert,
            timeout=self._timeout,  # type: ignore[arg-type]  # requests accepts a pair
            api_path="/v3/",
            session=session,
        )

    # -- transport ---------------------------------------------------------------------
    def _call(self, path: str, body: dict[str, Any], *, write: bool = False) -> dict[str, Any]:
        """POST to the gateway on the first endpoint that answers.

        A write is only retried on the next endpoint when the connection could not even be
        established; a timeout or reset after sending leaves the outcome unknown, so it is
        reported as :class:`Unavailable` rather than risking a double apply."""
        if self._closed:
            raise Unavailable("etcd datastore is closed")
        errors: list[str] = []
        n = len(self._clients)
        for i in range(n):
            idx = (self._current + i) % n
            client = self._clients[idx]
            try:
                self._await_leader(idx)
                out: dict[str, Any] = client.post(client.get_url(path), json=body)
                self._current = idx
                member = str((out.get("header") or {}).get("member_id") or "")
                if member:
                    self._member_ids[idx] = member
                    if member == self._suspect:  # it is back
                        self._suspect = None
                return out
            except gw_exc.Etcd3Exception as e:
                detail = e.detail_text or str(e) or type(e).__name__
                where = f"etcd {self.endpoints[idx]}: {path}"
                if not isinstance(e, gw_exc.ConnectionFailedError | gw_exc.ConnectionTimeoutError):
                    raise Unavailable(f"{where}: {_short(detail)}") from None
                self._suspect = self._member_ids.get(idx, self._suspect)
                if write and not _never_sent(detail):
                    raise Unavailable(
                        f"{where}: {_short(detail)} (outcome unknown: re-read before retrying)"
                    ) from None
                errors.append(f"{self.endpoints[idx]}: {_short(detail)}")
            except OSError as e:  # e.g. a TLS file removed since start: requests raises OSError
                if isinstance(e, requests.RequestException):
                    detail = _short(str(e))
                else:
                    detail = f"{e.__class__.__name__}: {_short(str(e))}"
                if write:
                    raise Unavailable(f"etcd {self.endpoints[idx]}: {path}: {detail}") from None
                errors.append(f"{self.endpoints[idx]}: {detail}")
            except ValueError as e:
                if write:
                    raise Unavailable(f"etcd {self.endpoints[idx]}: {path}: {e}") from None
                errors.append(f"{self.endpoints[idx]}: {_short(str(e))}")
        msg = "; ".join(errors)
        if self._cert is None and "TLS failure" in msg and "VERIFY_FAILED" not in msg:
            msg += " (no client certificate configured: the server may require one)"
        raise Unavailable("etcd unreachable: " + msg)

    def _await_leader(self, idx: int) -> None:
        """Failover without a lost proposal: after the member behind one endpoint failed, a
        request sent to another member before that member noticed (etcd's election timeout)
        is forwarded to the dead leader and silently dropped - it hangs until our read
        timeout (the 2 s failover gap of issue 19). So first ask this endpoint's
        ``maintenance/status`` (cheap, local) until it names a leader other than the failed
        member; a follower that was not the leader passes at once. No leader within the read
        timeout: :class:`Unavailable` (nothing was sent, so safe for writes too)."""
        suspect = self._suspect
        if suspect is None or self._member_ids.get(idx) == suspect:
            return
        client = self._clients[idx]
        url = client.get_url("maintenance/status")
        deadline = time.monotonic() + self._timeout[1]
        while True:
            try:
                resp = client.session.post(url, json={}, timeout=(self._timeout[0], 0.5))
                st = resp.json() if resp.status_code == 200 else {}
            except (requests.RequestException, ValueError):
                return  # the request itself will report what is wrong with this endpoint
            leader = str(st.get("leader") or "")
            if leader and leader != suspect:
                self._suspect = None
                return
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"etcd {self.endpoints[idx]}: no leader (member {suspect} failed; "
                    f"waited {self._timeout[1]}s for an election)"
                )
            time.sleep(0.02)

    def _range(self, key: str, prefix: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _range_end(key)
            body["sort_order"] = "ASCEND"
            body["sort_target"] = "KEY"
        return self._call("kv/range", body)

    def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
             failure: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
        body = {"compare": compare, "success": success, "failure": failure}
        return self._call("kv/txn", body, write=True)

    # -- reads -------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str = "") -> Resource:
        key = key_for(kind, name, namespace)
        kvs = self._range(key).get("kvs") or []
        if not kvs:
            raise NotFound(f"{kind} {_display(name, namespace)} not found")
        return self._remember(key, _kv_obj(kvs[0]))

    def list(self, kind: str, namespace: str | None = None) -> ListResult:
        if namespace is None:
            return self.list_prefix(prefix_for(kind))
        return self.list_prefix(prefix_for(kind, namespace))

    def list_prefix(self, prefix: str) -> ListResult:
        resp = self._range(prefix, prefix=True)
        items = [_kv_obj(kv) for kv in resp.get("kvs") or []]
        return ListResult(items=items, revision=int(resp["header"]["revision"]))

    @property
    def revision(self) -> int:
        return int(self._range("/calico/").get("header", {}).get("revision", 0))

    # -- writes ------------------------------------------------------------------------
    def create(self, obj: Resource, keep_identity: bool = False) -> Resource:
        key = obj_key(obj)
        new = stamp_new(obj, keep_identity)
        k = _b64(key)
        resp = self._txn(
            [{"key": k, "target": "VERSION", "result": "EQUAL", "version": "0"}],
            [{"request_put": {"key": k, "value": _b64(encode_obj(new))}}],
            [],
        )
        if not resp.get("succeeded"):
            kind, name, ns = ident(obj)
            raise AlreadyExists(f"{kind} {_display(name, ns)} already exists")
        return self._remember(key, with_revision(new, int(resp["header"]["revision"])))

    def update(self, obj: Resource) -> Resource:
        key = obj_key(obj)
        want = required_revision(obj)
        kind, name, ns = ident(obj)
        old = self._immutable.get((key, want))
        if old is None:  # not read through this client at that revision: fetch it
            kvs = self._range(key).get("kvs") or []
            if not kvs:
                raise NotFound(f"{kind} {_display(name, ns)} not found")
            old = _kv_obj(kvs[0])
            have = int(kvs[0]["mod_revision"])
            if have != want:
                raise Conflict(
                    f"{kind} {_display(name, ns)}: resourceVersion {want} is stale (stored {have})"
                )
        new = stamp_update(obj, old)
        k = _b64(key)
        resp = self._txn(
            [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(want)}],
            [{"request_put": {"key": k, "value": _b64(encode_obj(new))}}],
            [{"request_range": {"key": k}}],
        )
        if not resp.get("succeeded"):
            self._raise_failed(resp, kind, name, ns, want)
        return self._remember(key, with_revision(new, int(resp["header"]["revision"])))

    def _remember(self, key: str, obj: Resource) -> Resource:
        """Note (key, revision) -> immutable metadata, so that an update of an object read
        through this client needs one round trip. Sound because a key's value at a given
        mod_revision never changes; the CAS in the txn still decides."""
        meta = obj.get("metadata", {})
        rev = int(meta.get("resourceVersion", 0))
        with self._lock:
            if len(self._immutable) >= 4096:
                self._immutable.clear()
            self._immutable[(key, rev)] = {
                "metadata": {f: meta[f] for f in ("uid", "creationTimestamp") if f in meta}
            }
        return obj

    def delete(
        self, kind: str, name: str, namespace: str = "", revision: str | None = None
    ) -> Resource:
        k = _b64(key_for(kind, name, namespace))
        compare = [{"key": k, "target": "VERSION", "result": "GREATER", "version": "0"}]
        if revision is not None:
            compare = [
                {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}
            ]
        resp = self._txn(
            compare,
            [{"request_delete_range": {"key": k, "prev_kv": True}}],
            [{"request_range": {"key": k}}],
        )
        if not resp.get("succeeded"):
            self._raise_failed(resp, kind, name, namespace, revision)
        prev = (resp["responses"][0].get("response_delete_range") or {}).get("prev_kvs") or []
        if not prev:
            raise NotFound(f"{kind} {_display(name, namespace)} not found")
        return _kv_obj(prev[0])

    @staticmethod
    def _raise_failed(resp: dict[str, Any], kind: str, name: str, ns: str, want: Any) -> None:
        rng = (resp.get("responses") or [{}])[0].get("response_range") or {}
        kvs = rng.get("kvs") or []
        if not kvs:
            raise NotFound(f"{kind} {_display(name, ns)} not found")
        raise Conflict(
            f"{kind} {_display(name, ns)}: resourceVersion {want} is stale "
            f"(stored {kvs[0]['mod_revision']})"
        )

    # -- compaction --------------------------------------------------------------------
    def compact(self, revision: int | None = None) -> None:
        """Compact etcd's history up to ``revision`` (default: the current revision)."""
        rev = self.revision if revision is None else revision
        try:
            self._call("kv/compaction", {"revision": str(rev), "physical": True})
        except Unavailable as e:
            if "compacted" not in str(e):  # already compacted further: nothing to do
                raise

    # -- watch -------------------------------------------------------------------------
    def watch(
        self, prefix: str, from_revision: int, timeout: float | None = None
    ) -> Iterator[WatchEvent]:
        last = from_revision
        while not self._closed:
            read_timeout = _WATCH_READ if timeout is None else timeout
            resp = self._open_watch(prefix, last + 1, read_timeout)
            try:
                for ev in self._stream(resp, last):
                    last = ev.revision
                    yield ev
            except _IdleTimeout:
                if timeout is not None:
                    return
                # quiet for _WATCH_READ: re-establish (a dead server then shows as Unavailable)
            finally:
                self._forget(resp)
            # the stream ended (server restarting?): resume exactly after ``last``; reopening
            # fails with Unavailable while the server is down.
            time.sleep(0.05)

    def _open_watch(self, prefix: str, start: int, read_timeout: float) -> requests.Response:
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _range_end(prefix),
                "start_revision": str(start),
                "prev_kv": True,
            }
        }
        errors: list[str] = []
        n = len(self._clients)
        for i in range(n):
            idx = (self._current + i) % n
            client = self._clients[idx]
            try:
                resp = client.session.post(
                    client.get_url("watch"),
                    json=body,
                    stream=True,
                    timeout=(self._timeout[0], read_timeout),
                )
            except requests.RequestException as e:
                errors.append(f"{self.endpoints[idx]}: {_short(str(e))}")
                continue
            if resp.status_code != 200:
                resp.close()
                errors.append(f"{self.endpoints[idx]}: HTTP {resp.status_code}")
                continue
            with self._lock:
                self._streams.add(resp)
            if self._closed:
                self._forget(resp)
            return resp
        raise Unavailable("etcd watch: unreachable: " + "; ".join(errors))

    def _stream(self, resp: requests.Response, last: int) -> Iterator[WatchEvent]:
        try:
            for line in resp.iter_lines(chunk_size=None):
                if not line:
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    raise Unavailable(f"etcd watch: {_short(str(msg['error']))}")
                res = msg.get("result") or {}
                if res.get("compact_revision") and res.get("canceled"):
                    raise Compacted(
                        f"watch from revision {last}: etcd compacted history up to "
                        f"{res['compact_revision']}"
                    )
                if res.get("canceled"):
                    raise Unavailable(f"etcd watch canceled: {res.get('cancel_reason', '')}")
                events = res.get("events") or []
                for i, ev in enumerate(events):  # one response holds a whole revision
                    yield _event(ev, more=i < len(events) - 1)
        except requests.exceptions.ConnectionError as e:
            if "timed out" in str(e).lower():
                raise _IdleTimeout() from None
            if self._closed:
                return
            raise Unavailable(f"etcd watch: connection lost: {_short(str(e))}") from None
        except (requests.RequestException, AttributeError, ValueError) as e:
            if self._closed:
                return
            raise Unavailable(f"etcd watch: {_short(str(e))}") from None

    def _forget(self, resp: requests.Response) -> None:
        with self._lock:
            self._streams.discard(resp)
        with contextlib.suppress(Exception):
            resp.close()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            streams, self._streams = list(self._streams), set()
        for r in streams:
            with contextlib.suppress(Exception):
                r.close()
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.session.close()


class _IdleTimeout(Exception):
    pass


def _event(ev: dict[str, Any], more: bool = False) -> WatchEvent:
    kv = ev["kv"]
    key = _unb64(kv["key"]).decode()
    rev = int(kv["mod_revision"])
    if ev.get("type") == "DELETE":
        prev = ev.get("prev_kv")
        obj = _kv_obj(prev) if prev else {"metadata": {}}
        return WatchEvent(EventType.DELETED, key, rev, obj, more)
    typ = EventType.CREATED if kv.get("version") == "1" else EventType.UPDATED
    return WatchEvent(typ, key, rev, _kv_obj(kv), more)


def _never_sent(detail: str) -> bool:
    """Whether a connection error happened before the request could reach the server."""
    return any(
        marker in detail
        for marker in ("NewConnectionError", "ConnectTimeout", "refused", "SSLError", "SSL")
    )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    m = re.search(r"\(Caused by (\w+)\((.*)\)\)\s*$", text)
    if m:  # unwrap urllib3's "Max retries exceeded ... (Caused by X(...))"
        kind, inner = m.groups()
        text = inner.strip("\"'")
        if "SSL" in kind:
            text = f"TLS failure (check etcdCACertFile/etcdCertFile/etcdKeyFile): {text}"
        elif "NewConnection" in kind:
            text = "connection refused" if "refused" in text else f"cannot connect: {text}"
    return text if len(text) <= limit else text[:limit] + "..."


def _check_readable(setting: str, path: str) -> None:
    """A configured TLS file must be a readable file: say which setting is wrong up front
    rather than letting requests raise a bare OSError at the first call."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        reason = e.strerror or e.__class__.__name__
        raise Unavailable(f"etcd TLS: {setting} {_short(repr(path), 200)}: {reason}") from None


def _display(name: str, namespace: str) -> str:
    return f"{namespace}/{name}" if namespace else name
