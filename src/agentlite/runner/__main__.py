import asyncio
import sys

from agentlite.runner._loop import main

sys.exit(asyncio.run(main()))
