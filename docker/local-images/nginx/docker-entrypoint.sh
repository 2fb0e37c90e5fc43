#!/usr/bin/env bash
# Entrypoint of btc-orders-local/nginx-unprivileged, after the official image's scripts:
#   15-local-resolvers.envsh  NGINX_ENTRYPOINT_LOCAL_RESOLVERS set: NGINX_LOCAL_RESOLVERS = the
#                             nameservers of /etc/resolv.conf (IPv6 ones in brackets)
#   20-envsubst-on-templates  every $NGINX_ENVSUBST_TEMPLATE_DIR (/etc/nginx/templates) file named
#                             *$NGINX_ENVSUBST_TEMPLATE_SUFFIX (.template) rendered into
#                             $NGINX_ENVSUBST_OUTPUT_DIR (/etc/nginx/conf.d), same relative path
#                             without the suffix, substituting only the variables the environment
#                             defines (matching NGINX_ENVSUBST_FILTER if set)
# Both only when the command is nginx; NGINX_ENTRYPOINT_QUIET_LOGS silences the notes.
set -euo pipefail

note() { [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: $*"; }

if [ "${1:-}" = nginx ] || [ "${1:-}" = nginx-debug ]; then
    if [ -n "${NGINX_ENTRYPOINT_LOCAL_RESOLVERS:-}" ]; then
        NGINX_LOCAL_RESOLVERS=$(awk 'BEGIN{ORS=" "} $1=="nameserver" {if ($2 ~ ":") {print "["$2"]"} else {print $2}}' /etc/resolv.conf)
        NGINX_LOCAL_RESOLVERS=${NGINX_LOCAL_RESOLVERS% }
        export NGINX_LOCAL_RESOLVERS
        note "NGINX_LOCAL_RESOLVERS=$NGINX_LOCAL_RESOLVERS"
    fi

    template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
    suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
    output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
    filter=${NGINX_ENVSUBST_FILTER:-}
    if [ -d "$template_dir" ]; then
        if [ ! -w "$output_dir" ]; then
            note "$output_dir is not writable: templates not rendered"
        else
            # shellcheck disable=SC2016,SC2046  # the literal ${NAME} list for envsubst; awk's names split on purpose
            defined_envs=$(printf '${%s} ' $(awk "END { for (name in ENVIRON) { print ( name ~ /${filter}/ ) ? name : \"\" } }" </dev/null))
            while IFS= read -r -d '' template; do
                relative=${template#"$template_dir"/}
                output=$output_dir/${relative%"$suffix"}
                mkdir -p "$(dirname "$output")"
                note "rendering $template to $output"
                envsubst "$defined_envs" <"$template" >"$output"
            done < <(find -L "$template_dir" -type f -name "*$suffix" -print0)
        fi
    fi
fi

exec "$@"
