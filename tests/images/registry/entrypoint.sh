#!/bin/sh
# Entrypoint of stackpilot-test/registry: busybox httpd serves the storage directory on :5001
# (Range requests), the registry serves the API on :5000 and answers blob GETs with a 307 to
# the blob server. Ollama 0.11.x needs that redirect to point at ANOTHER host name than the one
# it pulls from (else "http: no Location header in response", ollama/ollama#7244): by default
# the container's own host name (its short id, which Docker's DNS resolves on user-defined
# networks such as a compose project's), so pulls name the service (`registry:5000/...`).
#   REGISTRY_BLOBS_URL  base URL of the blob server (default http://$(hostname):5001/)
set -eu
root=/var/lib/registry
blobs_url="${REGISTRY_BLOBS_URL:-http://$(hostname):5001/}"
cat >/etc/distribution/config.yml <<CFG
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: ${root}
  maintenance:
    uploadpurging:
      enabled: false
middleware:
  storage:
    - name: redirect
      options:
        baseurl: ${blobs_url}
http:
  addr: :5000
CFG
# Without -f, httpd forks into the background.
httpd -p 5001 -h "${root}"
exec /bin/registry serve /etc/distribution/config.yml
