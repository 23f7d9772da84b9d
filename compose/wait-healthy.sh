#!/usr/bin/env bash
# Wait (up to 60 s) until every running container of compose project $1 is healthy.
set -euo pipefail
project=${1:?usage: compose/wait-healthy.sh PROJECT}
deadline=$((SECONDS + 60))
while :; do
    ids=$(docker ps -q --filter "label=com.docker.compose.project=$project")
    [ -n "$ids" ] || { echo "no running container in project $project" >&2; exit 1; }
    states=$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}' $ids)
    if ! grep -qv -E ' (healthy|running)$' <<<"$states"; then
        sed 's/^\//  /' <<<"$states"
        exit 0
    fi
    if [ $SECONDS -ge $deadline ]; then
        echo "not healthy after 60 s:" >&2
        sed 's/^\//  /' <<<"$states" >&2
        exit 1
    fi
    sleep 1
done
