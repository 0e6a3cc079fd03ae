"""The program inside a box: ``python -m agentlite.guest.runner`` (see :mod:`agentlite.guest.runner._loop`)."""

import os
import sys

from agentlite.guest.runner._loop import main

code = main()
try:
    sys.stdout.flush()
    sys.stderr.flush()
except OSError:  # the host's end of the pipe is gone; the journal has every event
    pass
# Everything is said and the backend is gone: skip the interpreter's teardown (module and object
# clean-up, tens of ms on a small machine) so the box's command ends the moment the turn does.
os._exit(code)
