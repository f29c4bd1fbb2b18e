"""Prints server.json (the MCP registry's format) for a built bundle: the committed server.json
with the version set and an `mcpb` package added, whose fileSha256 is the bundle's.

usage: server_json.py SERVER_JSON VERSION SHA256 BUNDLE_FILE_NAME [URL]
"""
import json
import sys


def main() -> None:
    path, version, sha, name = sys.argv[1:5]
    url = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    server = json.load(open(path))
    server["version"] = version
    repo = server.get("repository", {}).get("url", "").rstrip("/")
    url = url or f"{repo}/releases/download/v{version}/{name}"
    server["packages"] = [p for p in server.get("packages", []) if p.get("registryType") != "mcpb"]
    server["packages"].append(
        {
            "registryType": "mcpb",
            "identifier": url,
            "version": version,
            "fileSha256": sha,
            "transport": {"type": "stdio"},
        }
    )
    json.dump(server, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
