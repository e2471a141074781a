"""The orchestrator's side of running plans on workers: ``planc.Cluster``.

A cluster is a set of worker daemons (``planc worker``), each a data owner's machine,
and a dealer daemon (``planc dealer``), reached over HTTPS with this client's own
certificate from the deployment's CA (``planc certs``). The orchestrator

1. searches the workers' catalogues (``search``, ``catalogue``: metadata only) and traces
   with shells whose shapes come from them (``load``);
2. runs a plan (``run``): it submits the plan-file bytes and a run description to every
   computing worker and the dealer at once; each reads the plan with every plan-file
   check and re-checks it against its own policy, limits and catalogue, and accepts it,
   holds it for its owner's approval, or refuses it with its rule and the plan's line.
   Only once every one has accepted does any start: the orchestrator hands each the
   others' data ports and certificates' names, and the parties connect their own mesh
   (mutually authenticated TLS: runtime/comm/tls.py);
3. if it is itself a party of the plan that does not compute (a *client*: the plan's
   last parties that no worker plays; runtime/clients.py), it secret-shares its inputs
   to the computing workers with the submission and, after the run, collects from each
   only its shares of what the plan reveals to it, and adds them up. A worker never
   returns anything else: public outputs (revealed to all) come with the run, values
   revealed to a worker's own party stay on that machine (written to its outputs
   directory), secret outputs stay shared at the workers under the handle
   ``<run id>/out<i>``.

Every call has a timeout; a refusal, a failed or unreachable worker is a ``ClusterError``
naming the worker, and the other workers' runs are cancelled.
"""
from __future__ import annotations

import base64
import concurrent.futures as cf
import time
import tomllib
import uuid
from pathlib import Path

import httpx
import torch

from planc.runtime import fixed
from planc.runtime.clients import ClientRun, ncompute

from .cluster_io import (ClusterError, ClusterResult, Entry, client_reveals, https_url, onnx_bytes,
                         plan_bytes, progress_printer, public_output, run_error, url_host)
from .worker.wire import encode_tensors

_FINAL = ("done", "failed", "cancelled", "expired", "refused")
_POLL_S = 10.0  # long-poll length per request (the worker caps it at 30 s)


class Cluster:
    """Workers {name: "https://host:port"}, the dealer ("https://host:port", or
    {name: url}) and this client's identity {"cert", "key", "ca"} (files).

    Worker names are the names in their certificates; a plan party is played by the
    worker of the same name unless ``run(parties=...)`` maps it elsewhere."""

    def __init__(self, workers: dict, dealer, identity: dict, *, timeout: float = 60.0, progress: bool = False):
        from planc.runtime.comm.tls import Identity

        if isinstance(dealer, str):
            dealer = {"dealer": dealer}
        if not isinstance(dealer, dict) or len(dealer) != 1:
            raise ClusterError(None, "dealer: give its URL, or {name: URL}")
        self.workers = {n: https_url(u) for n, u in workers.items()}
        (self.dealer_name, url), = dealer.items()
        self.urls = {**self.workers, self.dealer_name: https_url(url)}
        missing = [k for k in ("cert", "key", "ca") if k not in identity]
        if missing:
            raise ClusterError(None, f"identity: missing {', '.join(missing)} (files of this client's certificate)")
        self.identity = Identity(identity["cert"], identity["key"], identity["ca"])
        self.name = self.identity.name
        self.timeout = timeout
        self.progress = progress
        self._ctx = self.identity.client_context()
        self._http: dict[str, httpx.Client] = {}
        self._pool = cf.ThreadPoolExecutor(max_workers=max(4, len(self.urls)), thread_name_prefix="planc-cluster")

    @classmethod
    def from_config(cls, path, **kw) -> "Cluster":
        """cluster.toml: ``[identity]`` cert/key/ca, ``[workers]`` name = URL, ``[dealer]``
        name = URL, optional ``timeout``; paths relative to the file."""
        path = Path(path)
        try:
            cfg = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ClusterError(None, f"{path}: {e}") from None
        base = path.parent

        def table(key):
            v = cfg.get(key)
            if not isinstance(v, dict) or not v:
                raise ClusterError(None, f"{path}: [{key}] is missing or empty")
            return v

        ident = {k: str((base / v).resolve()) if isinstance(v, str) else v for k, v in table("identity").items()}
        unknown = set(cfg) - {"identity", "workers", "dealer", "timeout"}
        if unknown:
            raise ClusterError(None, f"{path}: unknown key {sorted(unknown)[0]!r} (keys: identity, workers, dealer, "
                                     "timeout)")
        kw.setdefault("timeout", float(cfg.get("timeout", 60.0)))
        return cls(table("workers"), table("dealer"), ident, **kw)

    # ---- HTTP -------------------------------------------------------------------------------------
    def _client(self, who: str) -> httpx.Client:
        c = self._http.get(who)
        if c is None:
            c = self._http[who] = httpx.Client(base_url=self.urls[who], verify=self._ctx, timeout=self.timeout)
        return c

    def _call(self, who: str, method: str, path: str, *, json=None, params=None, raw=False, timeout=None):
        if who not in self.urls:
            raise ClusterError(who, f"not in this cluster (workers: {', '.join(self.workers)}; dealer "
                                    f"{self.dealer_name})")
        try:
            r = self._client(who).request(method, path, json=json, params=params,
                                          timeout=timeout if timeout is not None else self.timeout)
        except httpx.HTTPError as e:
            raise ClusterError(who, f"unreachable at {self.urls[who]}: {type(e).__name__}: {e}", rule="connection") \
                from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
            except Exception:  # noqa: BLE001 — not one of ours
                raise ClusterError(who, f"HTTP {r.status_code}: {r.text[:500]}", code=r.status_code) from None
            raise ClusterError(err.get("worker") or who, err.get("message", ""), rule=err.get("rule"),
                               where=err.get("where"), code=r.status_code)
        return r.content if raw else r.json()

    def _each(self, names, fn) -> dict:
        """fn(name) for every name at once; {name: result or the ClusterError}."""
        futs = {n: self._pool.submit(fn, n) for n in names}
        out = {}
        for n, f in futs.items():
            try:
                out[n] = f.result()
            except ClusterError as e:
                out[n] = e
        return out

    def close(self):
        for c in self._http.values():
            c.close()
        self._http.clear()
        self._pool.shutdown(wait=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- catalogues -------------------------------------------------------------------------------
    def catalogue(self) -> list[Entry]:
        return self.search(None)

    def search(self, query: str | None) -> list[Entry]:
        """Entries of every worker whose tag, description or metadata contain `query`."""
        got = self._each(self.workers, lambda w: self._call(w, "GET", "/v1/catalogue",
                                                            params={"q": query} if query else None))
        entries = []
        for w, res in got.items():
            if isinstance(res, ClusterError):
                raise res
            for e in res["entries"]:
                entries.append(Entry(w, e["tag"], e["dtype"], tuple(e["shape"]), e.get("description") or "",
                                     e.get("meta") or {}, e.get("kind", "tensor"), tuple(e.get("inputs") or ()),
                                     tuple(e.get("outputs") or ())))
        return entries

    def load(self, tag: str, worker: str | None = None):
        """A shell for tracing: ``planc.load`` of the catalogue entry `tag` (of `worker`,
        or of the one worker that has it), shape and dtype filled in."""
        hits = [e for e in self.catalogue() if e.tag == tag and (worker is None or e.worker == worker)]
        if not hits:
            raise ClusterError(worker, f"no catalogue entry {tag!r}" + ("" if worker else " at any worker"))
        if len(hits) > 1:
            raise ClusterError(None, f"{tag!r} is in the catalogues of {', '.join(e.worker for e in hits)}: "
                                     "say which with worker=")
        return hits[0].shell()

    def status(self) -> dict:
        """{daemon: its status (runs, uptime) | the ClusterError reaching it}."""
        return self._each(self.urls, lambda w: self._call(w, "GET", "/v1/status"))

    def upload_model(self, tag: str, model, *, to: str, sample=None, description: str = "",
                     opset: int = 17) -> dict:
        """Store a model in worker `to`'s catalogue as ONNX, if its configuration allows
        uploads from this client: `model` an ``.onnx`` path, its bytes, or a torch module
        (exported here with `sample` as its example input, the first dimension a batch).
        Plans then call it with ``planc.load_model(tag, owner=to, ...)``; `to` links it.
        Returns the new catalogue entry (inputs and outputs, never the nodes)."""
        data = onnx_bytes(model, sample, opset)
        body = {"tag": tag, "onnx": base64.b64encode(data).decode("ascii"), "description": description}
        return self._call(to, "POST", "/v1/models", json=body, timeout=max(self.timeout, 60.0))

    def run_info(self, run_id: str, daemon: str) -> dict:
        """One daemon's record of a run: state, error (node, party, line), counters, outputs."""
        return self._call(daemon, "GET", f"/v1/runs/{run_id}")

    # ---- runs -------------------------------------------------------------------------------------
    def run(self, plan, *, data=None, inputs=(), parties: dict | None = None, timeout: float | None = None,
            run_id: str | None = None, progress=None) -> ClusterResult:
        """Run `plan` (a Plan, or plan-file bytes or path) on the workers.

        data: this client's own data {tag: tensor}, when it is a party of the plan.
        parties: {plan party: worker} (default: each party by the worker of its name;
        parties no worker plays are clients and must be this client, listed last).
        Returns the client's outputs, every party's counters, and what each worker kept."""
        t0 = time.perf_counter()
        timeout = self.timeout if timeout is None else timeout
        say = progress_printer(self.progress if progress is None else progress)
        raw, ir = plan_bytes(plan)
        g = ir.graph
        mapping = dict(parties) if parties is not None else {p: p for p in g.parties if p in self.workers}
        bad = [w for w in mapping.values() if w not in self.workers]
        if bad:
            raise ClusterError(bad[0], f"not a worker of this cluster (workers: {', '.join(self.workers)})")
        clients = [p for p in g.parties if p not in mapping]
        strangers = [c for c in clients if c != self.name]
        if strangers:
            raise ClusterError(None, f"plan party {strangers[0]} is played by no worker and is not this client "
                                     f"({self.name}); map it with parties={{...}}")
        n = ncompute(g, clients)
        frac = int(ir.meta.get("frac_bits", fixed.DEFAULT_FRAC_BITS))
        play = None
        shares = [{} for _ in range(n)]
        if clients:
            play = ClientRun(g, self.name, clients, data=data or {}, constants=ir.constants, inputs=inputs, frac=frac)
            shares = play.shares()
        elif data:
            raise ClusterError(None, f"data given, but {self.name} is not a party of the plan")
        rid = run_id or f"{ir.sha256()[:8]}-{uuid.uuid4().hex[:12]}"
        order = [p for p in g.parties[:n]] + ["dealer"]
        who = {p: mapping[p] for p in g.parties[:n]}
        who["dealer"] = self.dealer_name
        desc = {"run_id": rid, "plan": base64.b64encode(raw).decode("ascii"), "parties": {p: mapping[p] for p in g.parties[:n]},
                "clients": {c: self.name for c in clients}, "dealer": self.dealer_name, "timeout": timeout,
                "inputs": encode_tensors({str(i): torch.as_tensor(x) for i, x in enumerate(inputs)})
                if inputs else None}

        def submit(p):
            body = dict(desc, party=p,
                        client_shares=encode_tensors(shares[order.index(p)]) if p != "dealer" and shares[
                            order.index(p)] else None)
            return self._call(who[p], "POST", "/v1/runs", json=body)

        say(f"run {rid}: submitting to {', '.join(who[p] for p in order)}")
        try:
            got = self._each(order, submit)
            errors = [e for e in got.values() if isinstance(e, ClusterError)]
            if errors:
                raise errors[0]
            self._await_accepted(rid, order, who, got, timeout, say)
            accept_s = time.perf_counter() - t0
            peers = {str(i): {"host": got[p].get("data_host") or url_host(self.urls[who[p]]),
                              "port": got[p]["data_port"], "identity": who[p]} for i, p in enumerate(order)}
            say(f"run {rid}: all accepted in {accept_s * 1000:.0f} ms; starting")
            res = self._each(order, lambda p: self._call(who[p], "POST", f"/v1/runs/{rid}/start",
                                                         json={"peers": peers}))
            errors = [e for e in res.values() if isinstance(e, ClusterError)]
            if errors:
                raise errors[0]
            # a computing party's shares for this client are fetched as soon as it is done
            fetch = (lambda p: client_reveals(self._call(who[p], "GET", f"/v1/runs/{rid}/reveals", raw=True))) \
                if play is not None else None
            final = self._await_final(rid, order, who, timeout, say, fetch, set(g.parties[:n]))
        except BaseException as e:
            self._cancel(rid, order, who, str(e) or type(e).__name__)
            raise
        failed = [(p, d) for p, d in final.items() if d["state"] != "done"]
        if failed:
            raise run_error(who, failed, final)
        outputs = [None] * len(g.nodes[-1].operands)
        for p in g.parties[:n]:
            for o in final[p].get("outputs") or []:
                if o.get("kind") == "public" and outputs[o["index"]] is None:
                    outputs[o["index"]] = public_output(o)
        if play is not None:
            mine = play.finish([final[p]["reveals"] for p in g.parties[:n]])
            outputs = [m if m is not None else o for m, o in zip(mine, outputs)]
        wall = time.perf_counter() - t0
        say(f"run {rid}: done in {wall * 1000:.0f} ms")
        stats = {p if p != "dealer" else "dealer": final[p].get("stats") or {} for p in order}
        return ClusterResult(rid, ir.sha256(), outputs, stats, {p: who[p] for p in order},
                             {who[p]: final[p].get("outputs") for p in order}, wall, accept_s)

    def _await_accepted(self, rid, order, who, got, timeout, say):
        end = time.monotonic() + timeout
        told = set()
        while True:
            waiting = [p for p in order if got[p]["state"] == "pending_approval"]
            bad = [p for p in order if got[p]["state"] not in ("accepted", "pending_approval")]
            if bad:
                d = got[bad[0]]
                raise ClusterError(who[bad[0]], (d.get("error") or {}).get("message") or f"run is {d['state']}",
                                   rule=(d.get("error") or {}).get("rule") or d["state"])
            if not waiting:
                return
            for p in waiting:
                if p not in told:
                    told.add(p)
                    say(f"run {rid}: waiting for {who[p]}'s owner to approve (planc worker approve {rid} "
                        f"--config <{who[p]}'s config>)")
            if time.monotonic() > end:
                raise ClusterError(who[waiting[0]], f"run {rid} was not approved within {timeout:g} s",
                                   rule="approval")
            p = waiting[0]
            got[p] = self._call(who[p], "GET", f"/v1/runs/{rid}", params={"wait": min(_POLL_S, timeout)},
                                timeout=min(_POLL_S, timeout) + self.timeout)

    def _await_final(self, rid, order, who, timeout, say, fetch=None, fetch_from=()):
        """Every party's final run state; with `fetch`, a done party's state also holds
        fetch(party) under "reveals" (this client's shares, taken at once)."""
        end = time.monotonic() + timeout + 10
        final = {}

        def wait(p):
            while True:
                d = self._call(who[p], "GET", f"/v1/runs/{rid}", params={"wait": _POLL_S},
                               timeout=_POLL_S + self.timeout)
                if d["state"] in _FINAL:
                    if fetch is not None and p in fetch_from and d["state"] == "done":
                        d["reveals"] = fetch(p)
                    return d
                if time.monotonic() > end:
                    raise ClusterError(who[p], f"run {rid} still {d['state']} after {timeout:g} s", rule="timeout")

        futs = {p: self._pool.submit(wait, p) for p in order}
        pending = dict(futs)
        while pending:
            done, _ = cf.wait(list(pending.values()), return_when=cf.FIRST_COMPLETED)
            for p, f in list(pending.items()):
                if f in done:
                    del pending[p]
                    final[p] = f.result()  # an unreachable worker raises here, naming it
                    say(f"run {rid}: {who[p]} {final[p]['state']}")
                    if final[p]["state"] != "done":
                        # the others stop on their own (the mesh tells them); collect what they say
                        for q, g in pending.items():
                            try:
                                final[q] = g.result(timeout=timeout)
                            except Exception as e:  # noqa: BLE001 — that worker is named by its own error
                                final[q] = {"state": "failed", "error": {"message": str(e)}}
                        return final
        return final

    def _cancel(self, rid, order, who, reason=None):
        def cancel(p):
            try:
                self._call(who[p], "POST", f"/v1/runs/{rid}/cancel", timeout=5,
                           json={"reason": reason[:500]} if reason else None)
            except ClusterError:
                pass
        self._each(order, cancel)

    # ---- serving a shared model (planc/serving.py) ------------------------------------------------
    def share_model(self, model: str, *, owner: str, workers, timeout: float | None = None):
        """`owner`'s worker secret-shares `model`'s weights across `workers`: a Handle."""
        from .serving import share_model

        return share_model(self, model, owner=owner, workers=workers, timeout=timeout)

    def serve(self, handle, *, model, input_shape, max_requests: int | None = None, **kw):
        """Serve a shared model (Handle or name) until `max_requests` queries: a Service."""
        from .serving import serve

        return serve(self, handle, model=model, input_shape=input_shape, max_requests=max_requests, **kw)

    def stop_serving(self, handle_or_service, *, release: bool = True) -> dict:
        """Stop the service(s) of a handle and release the model's shares."""
        from .serving import stop

        return stop(self, handle_or_service, release=release)
