# shellcheck shell=bash
# Sourced by run.sh, test.sh and scripts/*.sh: URLs as they may be printed.

# mask_urls URL[;URL...]: each element of a `;`-separated list with its password replaced by ***
# (scheme://user:***@host:port/path); an element without a password is printed as it is.
mask_urls() {
    local element authority credentials masked=() parts=()
    IFS=';' read -r -a parts <<<"$1"
    for element in ${parts[@]+"${parts[@]}"}; do
        if [[ $element == *://* ]]; then
            authority=${element#*://}
            authority=${authority%%[/?#]*}
            if [[ $authority == *@* ]]; then
                credentials=${authority%@*}
                if [[ $credentials == *:* ]]; then
                    element="${element%%://*}://${credentials%%:*}:***@${authority##*@}${element#*://"$authority"}"
                fi
            fi
        fi
        masked+=("$element")
    done
    local IFS=';'
    printf '%s' "${masked[*]}"
}
