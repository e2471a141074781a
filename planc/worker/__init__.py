"""The daemons that run plans across machines: `planc worker` and `planc dealer`.

A worker is a data owner's daemon: it lists a catalogue of tagged tensors (metadata
only), takes plan submissions over an HTTPS API with client certificates, re-reads and
re-checks every plan against its own policy and catalogue, asks its owner for approval
when configured to, and plays its party of a run over the mutually authenticated TLS
mesh. The dealer is the same daemon with role "dealer" (dealer.py: the trust model).

Modules, one concept each: config (the TOML file), catalogue (tags -> tensors), log
(JSON lines), wire (refusals, base64, tensors), submit (checking a submission), runs
(states, approvals, deadlines), execute (running a party in a thread), daemon (who may
do what), app (the HTTP routes), server (uvicorn over TLS with the peer's identity),
cli (flags, owner commands). Nothing here is imported by planc's front end or runtime.
"""
