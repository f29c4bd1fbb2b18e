"""tools/list and plain tools/call, each result validated against its outputSchema."""

from __future__ import annotations

import jsonschema
import pytest
from conftest import GPU16, call, ok, select_args, tool_map, validate_output

pytestmark = pytest.mark.anyio

HINTS = {
    # name: (title, readOnly, destructive, idempotent, openWorld)
    "backup": ("Back up data services", False, False, False, False),
    "compose_down": ("Take the stack down", False, True, True, False),
    "compose_up": ("Bring the stack up", False, True, True, False),
    "deploy": ("Deploy new images", False, True, True, False),
    "detect_hardware": ("Detect hardware", True, False, True, False),
    "health": ("Stack health", True, False, True, False),
    "init_env": ("Fill missing secrets in .env", False, False, True, False),
    "kube_apply": ("Apply the stack to Kubernetes", False, True, True, False),
    "kube_render": ("Render the stack for Kubernetes", False, False, True, False),
    "list_backups": ("List backup sets", True, False, True, False),
    "list_models": ("List Ollama models", True, False, True, False),
    "logs": ("Service logs", True, False, True, False),
    "prune_backups": ("Prune old backup sets", False, True, True, False),
    "pull_model": ("Pull an Ollama model", False, False, True, True),
    "recover": ("Recover a service", False, True, False, False),
    "remove_model": ("Remove an Ollama model", False, True, True, False),
    "restore": ("Restore a backup set", False, True, False, False),
    "rollback": ("Roll back a deploy", False, True, False, False),
    "run_task": ("Run a declared task", False, True, False, False),
    "select_profile": ("Select deployment profile", False, True, True, False),
    "set_kv_cache": ("Set Ollama's KV cache", False, True, True, False),
    "stack_status": ("Stack status", True, False, True, False),
    "verify_backup": ("Verify a backup set", True, False, True, False),
}


async def test_list_tools_titles_annotations_schemas(launch, stack, era):
    async with launch(stack).connect(era) as client:
        tools = await tool_map(client)
        assert sorted(tools) == sorted(HINTS)
        for name, tool in tools.items():
            title, ro, destructive, idempotent, open_world = HINTS[name]
            assert tool.title == title
            assert tool.description
            a = tool.annotations
            assert a is not None, f"{name} has annotations"
            # All four hints are stated, not left to the spec's defaults.
            assert a.read_only_hint is ro
            assert a.destructive_hint is destructive
            assert a.idempotent_hint is idempotent
            assert a.open_world_hint is open_world
            for schema in (tool.input_schema, tool.output_schema):
                assert schema is not None and schema.get("type") == "object"
                jsonschema.validators.validator_for(schema).check_schema(schema)
        # The arguments this suite sends are valid by the advertised input schema.
        sp_in = tools["select_profile"].input_schema
        jsonschema.validators.validator_for(sp_in)(sp_in).validate(select_args())


async def test_detect_hardware_matches_output_schema(launch, stack, era):
    async with launch(stack).connect(era) as client:
        tools = await tool_map(client)
        out = ok(await call(client, "detect_hardware", {}))
        validate_output(tools["detect_hardware"], out)
        assert out["cpu"]["logical_cores"] >= 1
        assert out["memory"]["total_bytes"] > 0


async def test_select_profile_computes_without_writing(launch, stack, era):
    before = stack.env_text()
    async with launch(stack).connect(era) as client:
        tools = await tool_map(client)
        args = {"model": "llama3.1:8b", "context_length": 131072, "hardware": GPU16}
        out = ok(await call(client, "select_profile", args))
        validate_output(tools["select_profile"], out, branch="Output")
        assert out["kv_cache_type"] == "q8_0"
        assert out["context_length"] == 131072
        assert out["hardware_source"] == "override"
        assert "env_file" not in out
        # Deterministic: the same inputs give the same answer.
        again = ok(await call(client, "select_profile", args))
        assert again == out
    assert stack.env_text() == before
    audit = stack.last_audit()
    assert audit["tool"] == "select_profile"
    assert audit["outcome"] == "computed_only"


async def test_select_profile_adds_keys_without_confirmation(launch, empty_stack, era):
    async with launch(empty_stack).connect(era) as client:
        tools = await tool_map(client)
        out = ok(await call(client, "select_profile", select_args()))
        validate_output(tools["select_profile"], out, branch="Output")
        env_file = out["env_file"]
        assert env_file["written"] is True
        assert env_file["confirmed_by"] == "not_needed"
        assert env_file["plan"]["destructive"] is False
        assert {s["action"] for s in env_file["plan"]["steps"]} == {"set"}
        text = empty_stack.env_text()
        assert "OLLAMA_KV_CACHE_TYPE=q8_0\n" in text
        assert "OLLAMA_CONTEXT_LENGTH=131072\n" in text
        # Nothing left to change: nothing written.
        again = ok(await call(client, "select_profile", select_args()))
        assert again["env_file"]["written"] is False
    assert empty_stack.last_audit()["outcome"] == "no_changes"
