"""The runner's wire format: golden samples, framing, and where session ids come from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentlite.run.protocol import (
    OUTPUT_END,
    OUTPUT_START,
    BackendConfig,
    ErrorEvent,
    FrameParser,
    ResultEvent,
    SdkMessageEvent,
    StateEvent,
    UsageEvent,
    encode_frame,
    parse_event,
    session_id_of,
)

GOLDEN = Path(__file__).parent / "golden"
BUILT = {
    "result.json": ResultEvent(result="Final answer after the tool work.", new_session_id="thread-123"),
    "state_idle.json": StateEvent(state="idle", reason="awaiting_input", new_session_id="thread-123"),
    "error.json": ErrorEvent(error="Codex exited with code 1: boom", new_session_id="thread-123"),
    "sdk_message.json": SdkMessageEvent(
        sdk_type="item.completed",
        sdk_subtype="agent_message",
        message={"type": "item.completed", "item": {"id": "item_1", "type": "agent_message", "text": "hi"}},
    ),
    "usage.json": UsageEvent(input_tokens=22, output_tokens=14, cached_input_tokens=0, model="fake-model"),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_golden_samples_parse_and_match_what_we_build(name: str) -> None:
    text = (GOLDEN / name).read_text().strip()
    assert parse_event(text) == BUILT[name]
    assert json.loads(BUILT[name].model_dump_json(exclude_none=True)) == json.loads(text)


def lines_of(*events: object) -> list[str]:
    return "".join(encode_frame(e) for e in events).splitlines(keepends=True)  # type: ignore[arg-type]


def test_frames_split_across_reads_wait_for_their_end() -> None:
    parser = FrameParser()
    lines = lines_of(ResultEvent(result="a"), StateEvent(state="idle"))
    seen = []
    for index, line in enumerate(lines):
        got = list(parser.feed(line))
        seen += got
        if index == 1:
            assert got == []  # START and JSON arrived, END not yet: nothing is emitted
    assert seen == [ResultEvent(result="a"), StateEvent(state="idle")]


def test_non_json_frame_is_skipped_and_parsing_goes_on() -> None:
    parser = FrameParser()
    stream = [OUTPUT_START + "\n", "{not json\n", OUTPUT_END + "\n", "random library print\n",
              *lines_of(ResultEvent(result="ok"))]  # fmt: skip
    events = [e for line in stream for e in parser.feed(line)]
    assert events == [ResultEvent(result="ok")] and parser.skipped == 1


def test_unknown_event_type_is_skipped() -> None:
    parser = FrameParser()
    stream = [OUTPUT_START + "\n", '{"type":"mystery"}\n', OUTPUT_END + "\n"]
    assert [e for line in stream for e in parser.feed(line)] == [] and parser.skipped == 1


def test_session_id_comes_from_state_result_and_error_only() -> None:
    assert session_id_of(StateEvent(state="active", new_session_id="s1")) == "s1"
    assert session_id_of(ResultEvent(result=None, new_session_id="s2")) == "s2"
    assert session_id_of(ErrorEvent(error="x", new_session_id="s3")) == "s3"
    sdk = SdkMessageEvent(sdk_type="system", sdk_subtype="init", message={"session_id": "not-this"})
    assert session_id_of(sdk) is None


def test_backend_config_trims_model_and_defaults_key_env() -> None:
    assert BackendConfig(type="codex", model="  ").model is None
    assert BackendConfig(type="codex", model=" gpt-5 ").model == "gpt-5"
    assert BackendConfig(type="codex").key_env() == "OPENAI_API_KEY"
    assert BackendConfig(type="claude_code").key_env() == "ANTHROPIC_API_KEY"
    assert BackendConfig(type="acp", api_key_env="MY_KEY").key_env() == "MY_KEY"
    with pytest.raises(ValueError, match="type"):
        BackendConfig(type="gemini")  # type: ignore[arg-type]


def test_runner_rejects_bad_input_with_one_error_and_exit_1() -> None:
    proc = subprocess.run([sys.executable, "-m", "agentlite.guest.runner"], input='{"prompt": 5}', capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1
    parser = FrameParser()
    events = [e for line in proc.stdout.splitlines(keepends=True) for e in parser.feed(line)]
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert events[0].error.startswith("Failed to parse input: `prompt`: Input should be a valid string")
    assert "`group_folder`: Field required" in events[0].error
