"""The offline model server, over plain HTTP and with the real pinned ``codex`` and ``claude`` CLIs.

The CLI tests matter most: the server exists so the real agents can run offline, and only the real
binaries show whether the streams are complete enough (see /work/shared/reference/agent-clis.md for
the measured behaviour these settings come from). Every CLI run is hermetic (fresh config homes, no
retries, no analytics or plugins, no outbound traffic) and bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentlite.offline.model_server import SCENARIOS, ModelServer

CLI_BIN = Path(__file__).resolve().parents[2] / "agent-clis" / "node_modules" / ".bin"
CODEX = CLI_BIN / "codex"
CLAUDE = CLI_BIN / "claude"
CLI_TIMEOUT = 60.0


def _require(binary: Path) -> str:
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is missing; run scripts/install.sh to install the pinned agent CLIs")
    return str(binary)


# -- a minimal HTTP client --------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """The server-sent events of the body as ``(event name, data)`` pairs."""
        found = []
        for frame in self.body.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
        return found


async def http(url: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Reply:
    """One request over a fresh connection; the server closes it after answering."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, payload)


def user(text: str) -> dict[str, Any]:
    """A claude-style user message: a system reminder block, then the prompt."""
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": "<system-reminder>context</system-reminder>"},
            {"type": "text", "text": text},
        ],
    }


def anthropic_body(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "fake-model", "stream": True, "max_tokens": 100, "messages": list(messages)}


def openai_body(*items: dict[str, Any]) -> dict[str, Any]:
    return {"model": "fake-model", "stream": True, "input": list(items)}


def openai_user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def anthropic_texts(reply: Reply) -> list[str]:
    texts: dict[int, str] = {}
    for name, data in reply.events():
        if name == "content_block_delta" and data["delta"]["type"] == "text_delta":
            texts[data["index"]] = texts.get(data["index"], "") + data["delta"]["text"]
    return [texts[i] for i in sorted(texts)]


def openai_items(reply: Reply) -> list[dict[str, Any]]:
    return [data["item"] for name, data in reply.events() if name == "response.output_item.done"]


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer() as running:
        yield running


# -- plain HTTP ---------------------------------------------------------------------------------


async def test_unknown_routes_get_404_json_and_every_request_is_recorded(server: ModelServer) -> None:
    head = await http(server.url, "HEAD", "/")
    assert (head.status, head.body) == (404, b"")
    assert head.headers["connection"] == "close"
    models = await http(server.url, "GET", "/v1/models")
    assert models.status == 404
    assert models.json()["error"]["type"] == "not_found_error"
    assert [(r.method, r.path, r.body) for r in server.requests] == [
        ("HEAD", "/", None),
        ("GET", "/v1/models", None),
    ]
    assert server.openai_base_url == server.url + "/v1"
    assert server.anthropic_base_url == server.url


async def test_anthropic_stream_has_the_events_claude_needs(server: ModelServer) -> None:
    reply = await http(
        server.url, "POST", "/v1/messages?beta=true", anthropic_body(user("[scenario:text] hi"))
    )
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in reply.events()]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(names)
    assert anthropic_texts(reply) == ["hi from the offline model"]
    recorded = server.requests[-1]
    assert (recorded.path, recorded.query, recorded.scenario, recorded.step) == (
        "/v1/messages",
        "beta=true",
        "text",
        0,
    )
    assert recorded.body["model"] == "fake-model"
    assert recorded.headers["content-type"] == "application/json"


async def test_scenario_tag_overrides_the_default_and_steps_follow_tool_results(server: ModelServer) -> None:
    server.scenario = "text"
    first = user("[scenario:multi] look around")
    # claude puts role "system" messages inside `messages`; they must not confuse the script.
    system = {"role": "system", "content": "agent list"}
    reply = await http(server.url, "POST", "/v1/messages", anthropic_body(first, system))
    events = reply.events()
    blocks = [data["content_block"]["type"] for name, data in events if name == "content_block_start"]
    assert blocks == ["text", "text", "tool_use"]
    assert anthropic_texts(reply)[:2] == [
        "I will inspect the workspace first.",
        "Plan: run one command, then answer.",
    ]
    tool_input = "".join(
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(tool_input)["command"] == "echo probe > probe.txt"
    stop = next(data for name, data in events if name == "message_delta")
    assert stop["delta"]["stop_reason"] == "tool_use"
    assert stop["usage"]["output_tokens"] > 0

    tool_use = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}],
    }
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
    after = await http(
        server.url, "POST", "/v1/messages", anthropic_body(first, system, tool_use, result, system)
    )
    assert anthropic_texts(after) == ["Final answer after the tool work."]
    assert [(r.scenario, r.step) for r in server.requests] == [("multi", 0), ("multi", 1)]

    # Without a tag the server's own scenario answers.
    plain = await http(server.url, "POST", "/v1/messages", anthropic_body(user("hello")))
    assert anthropic_texts(plain) == ["hi from the offline model"]


async def test_openai_calls3_script_and_a_new_prompt_starts_a_new_turn(server: ModelServer) -> None:
    server.scenario = "calls3"
    items: list[dict[str, Any]] = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "system prompt"}],
        },
        openai_user("<environment_context>cwd</environment_context>"),
        openai_user("work please"),
    ]
    commands = []
    for _ in range(2):
        reply = await http(server.url, "POST", "/v1/responses", openai_body(*items))
        (call,) = openai_items(reply)
        assert call["type"] == "function_call" and call["name"] == "exec_command"
        arguments = json.loads(call["arguments"])
        assert arguments["login"] is False
        commands.append(arguments["cmd"])
        items += [
            call,
            {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": "Process exited with code 0",
            },
        ]
    final = await http(server.url, "POST", "/v1/responses", openai_body(*items))
    names = [name for name, _ in final.events()]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert "response.output_text.delta" in names
    (message,) = openai_items(final)
    assert message["content"][0]["text"] == "Done after three model calls."
    completed = final.events()[-1][1]["response"]
    assert completed["status"] == "completed" and completed["usage"]["total_tokens"] > 0
    assert commands == ["echo one > one.txt", "echo two > two.txt"]
    # A resumed session re-sends the history; the tool results of the old turn must not count.
    again = await http(
        server.url, "POST", "/v1/responses", openai_body(*items, message, openai_user("again"))
    )
    assert json.loads(openai_items(again)[0]["arguments"])["cmd"] == "echo one > one.txt"
    assert [r.step for r in server.requests] == [0, 1, 2, 0]


async def test_demo_echoes_the_last_prompt_without_context_blocks(server: ModelServer) -> None:
    long_prompt = "please fix the failing test in the parser " * 10
    reply = await http(server.url, "POST", "/v1/messages", anthropic_body(user("first"), user(long_prompt)))
    (text,) = anthropic_texts(reply)
    assert text.startswith('[offline demo model] You said: "please fix the failing test in the parser')
    assert "system-reminder" not in text and "first" not in text
    assert len(text) < 300
    codex_reply = await http(
        server.url,
        "POST",
        "/v1/responses",
        openai_body(
            openai_user("<environment_context>x</environment_context>"), openai_user("list the files")
        ),
    )
    assert 'You said: "list the files"' in openai_items(codex_reply)[0]["content"][0]["text"]


async def test_error500_uses_each_api_error_shape(server: ModelServer) -> None:
    server.scenario = "error500"
    anthropic = await http(server.url, "POST", "/v1/messages", anthropic_body(user("hi")))
    assert anthropic.status == 500
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "offline model server: injected HTTP 500"},
    }
    openai = await http(server.url, "POST", "/v1/responses", openai_body(openai_user("hi")))
    assert openai.status == 500
    assert openai.json()["error"]["type"] == "server_error"
    assert "injected HTTP 500" in openai.json()["error"]["message"]


async def test_unknown_scenarios_are_rejected(server: ModelServer) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        server.scenario = "nope"
    with pytest.raises(ValueError, match="unknown scenario"):
        ModelServer(scenario="nope")
    reply = await http(server.url, "POST", "/v1/messages", anthropic_body(user("[scenario:nope] hi")))
    assert reply.status == 400
    assert "unknown scenario 'nope'" in reply.json()["error"]["message"]
    assert set(SCENARIOS) == {
        "demo",
        "text",
        "multi",
        "tool",
        "calls3",
        "error500",
        "hang",
        "shell",
        "tool_call",
    }


async def test_hang_never_answers_and_does_not_block_stop() -> None:
    hanging = asyncio.Event()
    running = ModelServer(scenario="hang", log=lambda line: hanging.set())
    await running.start()
    reader, writer = await asyncio.open_connection(running.host, running.port)
    try:
        body = json.dumps(openai_body(openai_user("hi"))).encode()
        writer.write(f"POST /v1/responses HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        await asyncio.wait_for(hanging.wait(), 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        await asyncio.wait_for(running.stop(), 30)  # a hanging request does not hold the stop
        # The client sees the connection drop without any answer.
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    assert [r.scenario for r in running.requests] == ["hang"]


async def test_delay_is_waited_before_each_model_answer(server: ModelServer) -> None:
    server.delay = 0.3
    started = time.monotonic()
    reply = await http(server.url, "POST", "/v1/responses", openai_body(openai_user("[scenario:text] hi")))
    assert reply.status == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ValueError):
        server.delay = -1


def test_command_line_prints_the_url_and_logs_requests() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlite.offline.model_server", "--scenario", "text"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        reply = asyncio.run(http(url, "POST", "/v1/messages", anthropic_body(user("hi"))))
        assert anthropic_texts(reply) == ["hi from the offline model"]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "POST /v1/messages -> 200 scenario=text" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- the real CLIs ------------------------------------------------------------------------------


@dataclass
class CliRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    def describe(self) -> str:
        return f"rc={self.returncode} after {self.seconds:.1f} s\nevents={self.events}\nstderr={self.stderr[-3000:]}"


async def run_cli(argv: list[str], *, cwd: Path, env: dict[str, str]) -> CliRun:
    """Run a CLI to completion (stdin closed, its own process group) and parse its JSONL stdout."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.communicate()
        raise AssertionError(f"{argv[0]} did not finish within {CLI_TIMEOUT} s") from None
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    assert proc.returncode is not None
    return CliRun(proc.returncode, events, stderr.decode(errors="replace"), time.monotonic() - started)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """A small environment: no inherited keys, proxies or agent settings leak into the CLI."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


@pytest.fixture
def codex_home() -> Iterator[Path]:
    # Not under /tmp: codex refuses to create its sandbox helper aliases in the temp dir.
    path = Path.home() / ".cache" / "agentlite-test" / f"codex-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def run_codex(
    server: ModelServer, prompt: str, workspace: Path, env: dict[str, str], home: Path
) -> CliRun:
    settings = {
        "model_provider": "fake",
        "model": "fake-model",
        "model_providers.fake.name": "fake",
        "model_providers.fake.base_url": server.openai_base_url,
        "model_providers.fake.wire_api": "responses",
        "model_providers.fake.env_key": "FAKE_API_KEY",
        "model_providers.fake.request_max_retries": "0",
        "model_providers.fake.stream_max_retries": "0",
        "analytics.enabled": "false",
        "features.plugins": "false",
        "check_for_update_on_startup": "false",
    }
    argv = [_require(CODEX), "exec", "--json", "--skip-git-repo-check", "--ephemeral"]
    argv += ["--dangerously-bypass-approvals-and-sandbox", "--disable", "unbounded_connection_retries"]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    argv.append(prompt)
    return await run_cli(argv, cwd=workspace, env={**env, "CODEX_HOME": str(home), "FAKE_API_KEY": "dummy"})


async def run_claude(server: ModelServer, prompt: str, workspace: Path, env: dict[str, str]) -> CliRun:
    config = workspace.parent / "claude-config"
    config.mkdir(exist_ok=True)
    claude_env = {
        **env,
        "ANTHROPIC_BASE_URL": server.anthropic_base_url,
        "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CONFIG_DIR": str(config),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "IS_SANDBOX": "1",  # We run as root; claude refuses to skip permissions as root otherwise.
    }
    argv = [_require(CLAUDE), "-p", prompt, "--output-format", "stream-json", "--verbose"]
    argv += ["--dangerously-skip-permissions", "--model", "fake-model"]
    return await run_cli(argv, cwd=workspace, env=claude_env)


def agent_messages(run: CliRun) -> list[str]:
    return [
        e["item"]["text"]
        for e in run.events
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]


def result_event(run: CliRun) -> dict[str, Any]:
    results = [e for e in run.events if e.get("type") == "result"]
    assert len(results) == 1, run.describe()
    return results[0]


async def test_codex_text_turn(
    server: ModelServer, workspace: Path, base_env: dict[str, str], codex_home: Path
) -> None:
    server.scenario = "text"
    run = await run_codex(server, "say hi", workspace, base_env, codex_home)
    assert run.returncode == 0, run.describe()
    assert agent_messages(run) == ["hi from the offline model"], run.describe()
    assert any(e.get("type") == "turn.completed" for e in run.events), run.describe()
    model_calls = [r for r in server.requests if r.path == "/v1/responses"]
    assert len(model_calls) == 1
    assert model_calls[0].headers["authorization"] == "Bearer dummy"


@pytest.mark.parametrize("cli", ["codex", "claude"])
async def test_each_cli_gets_the_demo_reply(
    server: ModelServer, workspace: Path, base_env: dict[str, str], codex_home: Path, cli: str
) -> None:
    prompt = "Please summarise the README"
    if cli == "codex":
        run = await run_codex(server, prompt, workspace, base_env, codex_home)
        replies = agent_messages(run)
    else:
        run = await run_claude(server, prompt, workspace, base_env)
        replies = [result_event(run)["result"]]
    assert run.returncode == 0, run.describe()
    (reply,) = replies
    assert reply.startswith(f'[offline demo model] You said: "{prompt}".'), run.describe()


async def test_codex_multi_turn_runs_the_shell_tool(
    server: ModelServer, workspace: Path, base_env: dict[str, str], codex_home: Path
) -> None:
    run = await run_codex(server, "[scenario:multi] inspect the workspace", workspace, base_env, codex_home)
    assert run.returncode == 0, run.describe()
    assert agent_messages(run) == [
        "I will inspect the workspace first.",
        "Plan: run one command, then answer.",
        "Final answer after the tool work.",
    ], run.describe()
    commands = [
        e["item"]
        for e in run.events
        if e.get("type") == "item.completed" and e["item"].get("type") == "command_execution"
    ]
    assert len(commands) == 1 and commands[0]["exit_code"] == 0, run.describe()
    assert (workspace / "probe.txt").read_text() == "probe\n"
    assert [(r.scenario, r.step) for r in server.requests if r.path == "/v1/responses"] == [
        ("multi", 0),
        ("multi", 1),
    ]


async def test_codex_fails_fast_on_http_500(
    server: ModelServer, workspace: Path, base_env: dict[str, str], codex_home: Path
) -> None:
    server.scenario = "error500"
    run = await run_codex(server, "say hi", workspace, base_env, codex_home)
    assert run.returncode != 0, run.describe()
    assert run.seconds < 30, run.describe()
    assert any(e.get("type") == "turn.failed" for e in run.events), run.describe()
    assert 1 <= len([r for r in server.requests if r.path == "/v1/responses"]) <= 3


async def test_claude_text_turn(server: ModelServer, workspace: Path, base_env: dict[str, str]) -> None:
    run = await run_claude(server, "[scenario:text] say hi", workspace, base_env)
    assert run.returncode == 0, run.describe()
    result = result_event(run)
    assert result["is_error"] is False, run.describe()
    assert result["result"] == "hi from the offline model"
    model_calls = [r for r in server.requests if r.path == "/v1/messages"]
    assert len(model_calls) == 1
    assert model_calls[0].headers["x-api-key"] == "dummy"
    # claude warms the connection up with HEAD / before the model call; the server answers 404.
    assert ("HEAD", "/") in [(r.method, r.path) for r in server.requests]


async def test_claude_tool_turn_runs_bash(
    server: ModelServer, workspace: Path, base_env: dict[str, str]
) -> None:
    server.scenario = "tool"
    run = await run_claude(server, "write the file", workspace, base_env)
    assert run.returncode == 0, run.describe()
    result = result_event(run)
    assert result["is_error"] is False, run.describe()
    assert result["result"] == "Wrote out.txt with the shell tool."
    assert (workspace / "out.txt").read_text() == "probe\n"
    assert [r.step for r in server.requests if r.path == "/v1/messages"] == [0, 1]


async def test_claude_multi_turn_shows_three_texts(
    server: ModelServer, workspace: Path, base_env: dict[str, str]
) -> None:
    run = await run_claude(server, "[scenario:multi] inspect", workspace, base_env)
    assert run.returncode == 0, run.describe()
    texts = [
        block["text"]
        for e in run.events
        if e.get("type") == "assistant"
        for block in e["message"]["content"]
        if block.get("type") == "text"
    ]
    assert texts == [
        "I will inspect the workspace first.",
        "Plan: run one command, then answer.",
        "Final answer after the tool work.",
    ], run.describe()
    assert (workspace / "probe.txt").read_text() == "probe\n"
    assert result_event(run)["is_error"] is False


async def test_claude_reports_http_500_as_error(
    server: ModelServer, workspace: Path, base_env: dict[str, str]
) -> None:
    server.scenario = "error500"
    run = await run_claude(server, "say hi", workspace, base_env)
    result = result_event(run)
    assert result["is_error"] is True, run.describe()
    assert result.get("api_error_status") == 500
    assert "injected HTTP 500" in result["result"]
    assert run.returncode != 0
    assert run.seconds < 30, run.describe()


def streamed(reply: Reply) -> str:
    """Everything the model streamed: text deltas and tool input deltas, joined."""
    out = []
    for _, data in reply.events():
        delta = data.get("delta") or {}
        out.append(delta.get("text") or delta.get("partial_json") or "")
        block = data.get("content_block") or {}
        out.append(block.get("name") or "")
    return "".join(out)


async def test_shell_and_tool_call_scenarios_follow_the_server_settings(server: ModelServer) -> None:
    server.command = "echo custom > c.txt"
    reply = await http(server.url, "POST", "/v1/messages", anthropic_body(user("[scenario:shell] go")))
    assert "echo custom > c.txt" in streamed(reply)
    server.tool = ("mcp__agentlite__schedule_task", {"prompt": "p"})
    reply = await http(server.url, "POST", "/v1/messages", anthropic_body(user("[scenario:tool_call] go")))
    assert "mcp__agentlite__schedule_task" in streamed(reply) and '"prompt": "p"' in streamed(reply)


async def test_demo_echoes_the_newest_chat_message_of_an_agentlite_prompt(server: ModelServer) -> None:
    prompt = (
        '<context timezone="UTC" />\n<messages>\n<message sender="A" time="x">first</message>\n'
        '<message sender="B" time="y">a &amp; b</message>\n</messages>'
    )
    server.scenario = "demo"
    reply = await http(server.url, "POST", "/v1/messages", anthropic_body(user(prompt)))
    assert 'You said: "a & b"' in streamed(reply)
