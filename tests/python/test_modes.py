"""Server modes (--read-only, --allow-destructive) and bad input."""

from __future__ import annotations

import pytest
from conftest import (
    DESTRUCTIVE_ENV,
    GPU16,
    Person,
    call,
    ok,
    select_args,
    tool_error,
    tool_map,
    validate_output,
)
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio


async def test_read_only_lists_read_only_forms_and_refuses_writes(launch, stack, era):
    async with launch(stack, "--read-only").connect(era, person=Person("accept")) as client:
        tools = await tool_map(client)
        # Mutating tools are not listed; read-only tools and read-only forms are.
        assert sorted(tools) == ["detect_hardware", "health", "kube_render", "list_backups", "list_models", "logs", "select_profile", "stack_status", "verify_backup"]
        for tool in tools.values():
            # Under --read-only every listed tool is read-only, and says so.
            assert tool.annotations.read_only_hint is True
            assert tool.annotations.destructive_hint is False
        err = tool_error(await call(client, "select_profile", select_args()))
        assert err["kind"] == "not_allowed"
        assert "--read-only" in err["message"]
        # The read-only form still runs, and so does the read-only tool.
        computed = ok(await call(client, "select_profile", {"model": "llama3.1:8b", "hardware": GPU16}))
        assert "env_file" not in computed
        validate_output(tools["select_profile"], computed)
        validate_output(tools["detect_hardware"], ok(await call(client, "detect_hardware", {})))
    assert stack.env_text() == DESTRUCTIVE_ENV
    assert all(line["outcome"] != "applied" for line in stack.audit_lines()), "nothing was applied"


async def test_allow_destructive_runs_without_asking(launch, stack, era):
    async with launch(stack, "--allow-destructive").connect(era) as client:
        out = ok(await call(client, "select_profile", select_args()))
    assert out["env_file"]["confirmed_by"] == "allow_destructive"
    assert "OLLAMA_KV_CACHE_TYPE=q8_0\n" in stack.env_text()
    assert stack.last_audit()["confirmation"] == "allow_destructive"


BAD_INPUTS = [
    # (arguments, field, a value `allowed` must contain or None)
    ({"model": "llama3.1:8b", "kv_cache_types": ["q5_k"]}, "kv_cache_types[0]", "q8_0"),
    ({"model": "no-such-model:1b"}, "model", "llama3.1:8b"),
    ({"model": "llama3.1:8b", "context_length": 100}, "context_length", None),
    ({"model": "llama3.1:8b", "num_parallel": 0}, "num_parallel", None),
    ({"model": "llama3.1:8b", "surprise": True}, "surprise", None),
    ({"hardware": GPU16}, "model", None),
    (
        {"model": "llama3.1:8b", "hardware": {**GPU16, "memory_available_bytes": GPU16["memory_total_bytes"] + 1}},
        "hardware.memory_available_bytes",
        None,
    ),
    ({"model": "llama3.1:8b", "confirm_token": "x"}, "confirm_token", None),
]


async def test_bad_input_is_a_tool_error_and_the_server_keeps_serving(launch, stack, era):
    async with launch(stack).connect(era) as client:
        tools = await tool_map(client)
        for args, field, allowed in BAD_INPUTS:
            err = tool_error(await call(client, "select_profile", args))
            assert err["kind"] == "invalid_input", (args, err)
            assert err["field"] == field, (args, err)
            assert field in err["message"]
            if allowed is not None:
                assert allowed in err["allowed"], err
        # A protocol fault is a JSON-RPC error, not a tool result.
        with pytest.raises(MCPError) as raised:
            await call(client, "no_such_tool", {})
        assert "detect_hardware" in str(raised.value)
        # Still serving, on the same connection.
        out = ok(await call(client, "select_profile", {"model": "llama3.1:8b", "hardware": GPU16}))
        validate_output(tools["select_profile"], out, branch="Output")
        ok(await call(client, "detect_hardware", {}))
    assert stack.env_text() == DESTRUCTIVE_ENV
