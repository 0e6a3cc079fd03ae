"""A minimal BoxLite host for tests: a second process that owns boxes in its own BoxLite home.

Run as ``python -m tests.boxlite_host <agentlite home> <oci layout> <agent> <boxes>``. It creates
that many boxes (not booted) the way a host does (record first, then the box), prints one JSON line
``{"pid", "box_home", "boxes"}`` and then answers commands on stdin, one JSON line each:
``list`` (its own boxes), ``sweep`` (its orphan cleanup), ``boot`` (run ``echo up`` in its first
box, which boots its VM: hardware virtualization only), ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from agentlite.box.base import BoxSpec
from agentlite.box.boxlite import BoxliteRuntime
from agentlite.box.lifecycle import box_name, cleanup_orphans
from agentlite.box.ownership import ownership_for


async def main(home: Path, layout: Path, agent: str, count: int) -> None:
    runtime = BoxliteRuntime(home, rootfs_path=layout)
    names = []
    for i in range(count):
        name = box_name(agent, f"h{os.getpid()}", i)
        ownership_for(home).register(name, box_home=runtime.box_home)
        await runtime.create(name, BoxSpec(memory_mib=256))
        names.append(name)
    print(json.dumps({"pid": os.getpid(), "box_home": str(runtime.box_home), "boxes": names}), flush=True)
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = line.strip()
        if command == "list":
            reply: object = sorted(b.name for b in await runtime.list())
        elif command == "sweep":
            reply = [d.as_json() for d in await cleanup_orphans(runtime, home, agent)]
        elif command == "boot":
            process = await runtime.exec(names[0], ["sh", "-c", "echo up"])
            await process.close_stdin()
            output = b"".join([line async for line in process.stdout_lines()])
            reply = {"exit_code": await process.wait(), "stdout": output.decode()}
        else:
            break
        print(json.dumps(reply), flush=True)
    await runtime.aclose()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
