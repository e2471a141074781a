"""The dealer daemon: the same daemon as a worker, with role "dealer".

Trust model. planc's protocols are secure against *semi-honest* parties — each follows
the plan but may try to learn from what it sees — with a *dealer that colludes with
none of them*:

- the dealer sees no data: no catalogue, no loads, no inputs of any client, no shares
  and no reveals. It receives the plan (hence the architecture and the shapes of every
  value, which every party sees as well) and plays rank n of the mesh
  (``runtime.session.run_dealer``): it makes the correlated randomness the plan needs
  (Beaver triples and the masks of comparisons and truncations), hands every party the
  seed of its part, and sends the last party the corrections, all before the online
  phase;
- so the dealer learns nothing about the data: its view is a function of the plan alone;
- if the dealer colludes with a computing party — shares its seeds and corrections with
  it — that party can remove the masks from what it receives and privacy is lost; a
  deployment must therefore run the dealer under an operator independent of every data
  owner and of the orchestrator (and, for the same reason, never on a party's machine);
- a dealer that deviates (bad material) can make a run's results wrong, not reveal
  data; detecting that is outside the semi-honest model.

The dealer still protects itself: it admits every plan under its own policy and limits
(``admit(graph, policy, party="dealer")``: its memory and the size of the material),
refuses a submission that does not name it as the dealer, and serves the same API
(info, status, runs, approval) as a worker, without a catalogue.
"""
from __future__ import annotations

ROLE = "dealer"
PARTY = "dealer"  # the `party` a submission gives the dealer
