"""The peer config check: do the directors of a pair run the same shared config?

Read in this order:

- :mod:`director.peer.canonical` - which keys are shared, the canonical form, its digest (pure);
- :mod:`director.peer.diff` - two forms compared in config terms (pure);
- :mod:`director.peer.auth` - HMAC-signed requests and answers, replay and clock checks (pure);
- :mod:`director.peer.state` - each peer's verdict and when it is worth a log line (pure);
- :mod:`director.peer.client` - one signed question to a peer (aiohttp);
- :mod:`director.peer.service` - the check in the daemon: endpoint, polling, status, diff-peer;
- :mod:`director.peer.command` - ``directorctl diff-peer`` and the status lines.
"""
