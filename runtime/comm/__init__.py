"""Communicators between parties, one file per transport: ``inproc`` (threads of one
process, a queue per ordered pair) and ``dist`` (torch.distributed over gloo), both a
``base.Comm``: one exchange is one round, and rounds and bytes are counted the same way."""
