"""The control API of ``directord``, for ``directorctl``: one package, read in this order.

- :mod:`director.control.protocol` - the wire format (one JSON line each way) and its errors;
- :mod:`director.control.server` - the Unix-socket server in the daemon (root only, capped);
- :mod:`director.control.commands` - what each command does inside the daemon, and the status;
- :mod:`director.control.client` - the synchronous client ``directorctl`` uses;
- :mod:`director.control.ctl` - ``directorctl``'s daemon commands and how they print.
"""

from director.control.client import request
from director.control.protocol import ControlError, Handler, RequestError
from director.control.server import ControlServer

__all__ = ["ControlError", "ControlServer", "Handler", "RequestError", "request"]
