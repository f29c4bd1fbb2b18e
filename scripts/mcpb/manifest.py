"""Prints the MCPB manifest (manifest_version 0.4) for stackpilot <version>.

The tool list comes from tools/*.json (what `stackpilot tools export tools` wrote from the
code), so the bundle names exactly the tools the binary serves. The host starts the bundled
binary over stdio with the person's settings (user_config): the stack directory, the Docker
and Ollama endpoints, and read-only mode.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main() -> None:
    version = sys.argv[1]
    tools = [
        json.loads(p.read_text())
        for p in sorted((ROOT / "tools").glob("*.json"))
    ]
    manifest = {
        "manifest_version": "0.4",
        "name": "stackpilot",
        "display_name": "stackpilot",
        "version": version,
        "description": "Provision and operate a local LLM stack (Ollama, API, Qdrant, Postgres, MongoDB) on Docker Compose, with plans and confirmations.",
        "long_description": (
            "stackpilot detects the machine's hardware, picks a deployment profile that fits a "
            "model, brings the stack up and down through Docker Compose, checks its health, "
            "recovers services, backs up and restores its databases and volumes, and manages "
            "Ollama models. Every mutating tool plans first; destructive plans run only after "
            "a person confirms them. Needs Docker with Compose v2 on this machine."
        ),
        "author": {"name": "stackpilot developers"},
        "license": "Apache-2.0",
        "keywords": ["docker", "compose", "ollama", "llm", "devops"],
        "server": {
            "type": "binary",
            "entry_point": "server/stackpilot",
            "mcp_config": {
                "command": "${__dirname}/server/stackpilot",
                "args": ["serve", "--stack", "${user_config.stack_dir}"],
                "env": {
                    "DOCKER_HOST": "${user_config.docker_host}",
                    "OLLAMA_HOST": "${user_config.ollama_host}",
                    "STACKPILOT_READ_ONLY": "${user_config.read_only}",
                    "STACKPILOT_LOG": "info",
                },
            },
        },
        "tools": [{"name": t["name"], "description": t["description"]} for t in tools],
        "tools_generated": False,
        "prompts_generated": True,
        "compatibility": {"platforms": ["linux"]},
        "user_config": {
            "stack_dir": {
                "type": "directory",
                "title": "Stack directory",
                "description": "The folder with the stack's docker-compose.yml and .env (stackpilot keeps its lock, audit log and backups there too).",
                "required": True,
            },
            "docker_host": {
                "type": "string",
                "title": "Docker engine (DOCKER_HOST)",
                "description": "Where the Docker engine listens: unix:///var/run/docker.sock, tcp://host:2376, ssh://user@host. Empty: the default socket.",
                "required": False,
                "default": "",
            },
            "ollama_host": {
                "type": "string",
                "title": "Ollama URL (OLLAMA_HOST)",
                "description": "An Ollama that runs outside the stack, e.g. http://127.0.0.1:11434. Empty: the stack's own ollama service.",
                "required": False,
                "default": "",
            },
            "read_only": {
                "type": "boolean",
                "title": "Read-only",
                "description": "Offer only the tools that change nothing (status, health, hardware, lists).",
                "required": False,
                "default": False,
            },
        },
    }
    json.dump(manifest, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
