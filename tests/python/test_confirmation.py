"""The confirmation guard through the SDK: elicitation (2025-11-25 elicitation/create,
2026-07-28 input-required), and the confirm-token path for clients that cannot ask."""

from __future__ import annotations

import time

import mcp_types as types
import pytest
from conftest import (
    DESTRUCTIVE_ENV,
    Person,
    call,
    ok,
    select_args,
    sign_token,
    token_claims,
    tool_error,
    tool_map,
    validate_output,
)

pytestmark = pytest.mark.anyio

APPLIED_PREFIX = "# kept\nOLLAMA_KV_CACHE_TYPE=q8_0\nPOSTGRES_PASSWORD=hunter2\n"

# How each era's elicitation shows up in env_file.confirmed_by and the audit log.
ELICITED_BY = {"2025-11-25": "elicitation", "2026-07-28": "input_required"}


def assert_applied(stack) -> None:
    text = stack.env_text()
    assert text.startswith(APPLIED_PREFIX), text
    assert "OLLAMA_CONTEXT_LENGTH=131072\n" in text
    assert "OLLAMA_FLASH_ATTENTION=1\n" in text


def assert_untouched(stack, env: str = DESTRUCTIVE_ENV) -> None:
    assert stack.env_text() == env, ".env was not changed"


def overwrite_step(plan: dict) -> dict:
    steps = [s for s in plan["steps"] if s["action"] == "overwrite"]
    assert len(steps) == 1, plan
    return steps[0]


def assert_asked_once(person: Person) -> None:
    assert len(person.asked) == 1, f"the person was asked once, not {len(person.asked)} times"
    asked = person.asked[0]
    assert asked.mode == "form"
    assert "plan digest" in asked.message
    assert "OLLAMA_KV_CACHE_TYPE=f16 with q8_0" in asked.message
    schema = asked.requested_schema
    assert schema["type"] == "object"
    assert schema["properties"]["confirm"]["type"] == "boolean"
    assert schema["required"] == ["confirm"]


async def test_elicitation_accept_applies(launch, stack, era):
    person = Person("accept")
    async with launch(stack).connect(era, person=person) as client:
        tools = await tool_map(client)
        out = ok(await call(client, "select_profile", select_args()))
        validate_output(tools["select_profile"], out, branch="Output")
    assert_asked_once(person)
    env_file = out["env_file"]
    assert env_file["written"] is True
    assert env_file["confirmed_by"] == ELICITED_BY[era]
    assert env_file["plan"]["destructive"] is True
    step = overwrite_step(env_file["plan"])
    assert (step["target"], step["before"], step["after"]) == ("OLLAMA_KV_CACHE_TYPE", "f16", "q8_0")
    assert person.asked[0].message.endswith(f"plan digest {env_file['plan']['digest'][:16]}")
    assert_applied(stack)
    audit = stack.last_audit()
    assert audit["confirmation"] == ELICITED_BY[era]
    assert audit["outcome"] == "applied"
    assert audit["plan_digest"] == env_file["plan"]["digest"]


@pytest.mark.parametrize("answer", ["decline", "cancel"])
async def test_elicitation_decline_or_cancel_changes_nothing(launch, stack, era, answer):
    person = Person(answer)
    async with launch(stack).connect(era, person=person) as client:
        tools = await tool_map(client)
        out = ok(await call(client, "select_profile", select_args()))
        validate_output(tools["select_profile"], out, branch="Declined")
    assert_asked_once(person)
    assert out["declined"] is True
    assert out["answer"] == answer
    assert "nothing was changed" in out["message"]
    assert out["plan"]["destructive"] is True
    assert_untouched(stack)
    audit = stack.last_audit()
    assert audit["outcome"] == {"decline": "declined", "cancel": "cancelled"}[answer]
    assert audit["confirmation"] is None


async def test_token_path_confirm_then_reuse_refused(launch, stack, era):
    async with launch(stack).connect(era) as client:  # no elicitation capability
        tools = await tool_map(client)
        sp = tools["select_profile"]

        # 1. No way to ask the person: a plan and a token; nothing changed.
        first = ok(await call(client, "select_profile", select_args()))
        validate_output(sp, first, branch="ConfirmationRequired")
        assert first["confirmation_required"] is True
        assert first["reason"]
        assert first["expires_at"].endswith("Z")
        assert first["plan"]["destructive"] is True
        overwrite_step(first["plan"])
        assert_untouched(stack)
        audit = stack.last_audit()
        assert audit["outcome"] == "confirmation_required"
        assert audit["plan_digest"] == first["plan"]["digest"]
        assert audit["arguments"]["hardware"]["logical_cores"] == 16
        claims = token_claims(first["confirm_token"])
        assert set(claims) == {"d", "s", "e", "n"}
        assert claims["d"] == first["plan"]["digest"]
        assert 0 < claims["e"] - time.time() <= 600 + 5

        # 2. Same inputs, same state: the same plan, byte for byte, and a new token.
        again = ok(await call(client, "select_profile", select_args()))
        assert again["plan"] == first["plan"]
        assert again["confirm_token"] != first["confirm_token"]

        # 3. Back with the token: applied.
        token = first["confirm_token"]
        applied = ok(await call(client, "select_profile", select_args(confirm_token=token)))
        validate_output(sp, applied, branch="Output")
        assert applied["env_file"]["confirmed_by"] == "token"
        assert applied["env_file"]["written"] is True
        assert applied["env_file"]["plan"]["digest"] == first["plan"]["digest"]
        assert_applied(stack)
        audit = stack.last_audit()
        assert audit["confirmation"] == "token"
        assert audit["outcome"] == "applied"
        assert audit["arguments"]["confirm_token"] == "[redacted]"
        assert token not in (stack.path / ".stackpilot" / "audit.jsonl").read_text()
        for key in ("time", "tool", "arguments", "plan_digest", "confirmation", "outcome"):
            assert key in audit

        # 4. The same token again, on the same destructive state: refused (single use).
        stack.write_env(DESTRUCTIVE_ENV)
        err = tool_error(await call(client, "select_profile", select_args(confirm_token=token)))
        assert err["kind"] == "confirmation"
        assert "already used" in err["message"]
        assert err.get("next_step")
        assert_untouched(stack)
        assert stack.last_audit()["outcome"].startswith("error:")

        # The server keeps serving: the second, unused token still works.
        ok(await call(client, "select_profile", select_args(confirm_token=again["confirm_token"])))
        assert_applied(stack)


async def test_expired_and_forged_tokens_refused(launch, stack, era):
    async with launch(stack).connect(era) as client:
        first = ok(await call(client, "select_profile", select_args()))
        token = first["confirm_token"]
        key = stack.confirm_key()

        # Signed with the stack's own key for the current plan, but expired.
        claims = token_claims(token)
        claims["e"] = 1000
        expired = sign_token(key, claims)
        err = tool_error(await call(client, "select_profile", select_args(confirm_token=expired)))
        assert err["kind"] == "confirmation"
        assert "expired" in err["message"]
        assert_untouched(stack)

        # A later expiry without the key: the signature no longer matches.
        claims = token_claims(token)
        claims["e"] += 3600
        forged = sign_token(b"not the stack's key, not at all!", claims)
        err = tool_error(await call(client, "select_profile", select_args(confirm_token=forged)))
        assert err["kind"] == "confirmation"
        assert "signature" in err["message"]

        # Garbage.
        err = tool_error(await call(client, "select_profile", select_args(confirm_token="not-a-token")))
        assert err["kind"] == "confirmation"
        assert_untouched(stack)

        # None of those spent the real token.
        applied = ok(await call(client, "select_profile", select_args(confirm_token=token)))
        assert applied["env_file"]["confirmed_by"] == "token"
        assert_applied(stack)


async def test_drifted_token_gets_a_new_plan(launch, stack, era):
    async with launch(stack).connect(era) as client:
        tools = await tool_map(client)
        fresh = ok(await call(client, "select_profile", select_args()))
        drifted_env = DESTRUCTIVE_ENV.replace("f16", "q4_0")
        stack.write_env(drifted_env)  # someone edits .env before the agent comes back

        out = ok(await call(client, "select_profile", select_args(confirm_token=fresh["confirm_token"])))
        validate_output(tools["select_profile"], out, branch="ConfirmationRequired")
        assert out["confirmation_required"] is True
        assert "changed" in out["reason"]
        assert out["plan"]["digest"] != fresh["plan"]["digest"]
        assert overwrite_step(out["plan"])["before"] == "q4_0"
        assert out["confirm_token"] != fresh["confirm_token"]
        assert_untouched(stack, drifted_env)

        # The old token was spent by that attempt.
        err = tool_error(await call(client, "select_profile", select_args(confirm_token=fresh["confirm_token"])))
        assert "already used" in err["message"]
        assert_untouched(stack, drifted_env)

        # The new one runs the new plan.
        applied = ok(await call(client, "select_profile", select_args(confirm_token=out["confirm_token"])))
        assert applied["env_file"]["confirmed_by"] == "token"
        assert stack.env_text().startswith(APPLIED_PREFIX)


async def test_input_required_round_trip_by_hand(launch, stack):
    """2026-07-28 only: drive the input-required exchange without the SDK's driver,
    then replay the spent request state."""
    async with launch(stack).connect("2026-07-28", person=Person("accept")) as client:
        session = client.session
        first = await session.call_tool("select_profile", select_args(), allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult), first
        assert first.request_state
        assert set(first.input_requests or {}) == {"confirm"}
        request = first.input_requests["confirm"]
        assert request.method == "elicitation/create"
        assert "plan digest" in request.params.message
        assert_untouched(stack)
        assert stack.last_audit()["outcome"] == "input_required"

        accept = {"confirm": types.ElicitResult(action="accept", content={"confirm": True})}
        done = await session.call_tool(
            "select_profile",
            select_args(),
            input_responses=accept,
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(done, types.CallToolResult)
        assert ok(done)["env_file"]["confirmed_by"] == "input_required"
        assert_applied(stack)

        # The request state is a single-use token: replaying it is refused.
        stack.write_env(DESTRUCTIVE_ENV)
        replay = await session.call_tool(
            "select_profile",
            select_args(),
            input_responses=accept,
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(replay, types.CallToolResult)
        err = tool_error(replay)
        assert err["kind"] == "confirmation" and "already used" in err["message"]
        assert_untouched(stack)

        # "accept" with confirm: false is not a yes.
        second = await session.call_tool("select_profile", select_args(), allow_input_required=True)
        lukewarm = {"confirm": types.ElicitResult(action="accept", content={"confirm": False})}
        out = await session.call_tool(
            "select_profile",
            select_args(),
            input_responses=lukewarm,
            request_state=second.request_state,
            allow_input_required=True,
        )
        assert ok(out)["declined"] is True
        assert_untouched(stack)
