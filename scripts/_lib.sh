# shellcheck shell=bash
# Shared helpers for scripts/test, scripts/demo and .ci/run.  Source it; do not run it.
#
# Interpreter discovery (cs_find_python 3.X), first hit wins:
#   1. $CANCELSCOPE_PYTHON_3_X                 explicit override, e.g. CANCELSCOPE_PYTHON_3_12=/opt/py/bin/python3.12
#   2. every `python3.X` on $PATH, in PATH order (pyenv shims that refuse to run are skipped)
#   3. <root>/versions/3.X.<patch>/bin/python, highest patch first, for each <root> in
#      $CANCELSCOPE_PYTHON_ROOTS (colon-separated).  Default: "$(pyenv root)" (when pyenv is on
#      PATH), then /root/.pyenv.
# A candidate only counts if it runs, really is 3.X, and can build venvs (has venv + ensurepip;
# Debian's /usr/bin/python3.X lacks ensurepip unless python3.X-venv is installed).
#
# Faking a missing interpreter (how the CI=true failure path was tested):
#   PATH=/usr/bin:/bin CANCELSCOPE_PYTHON_ROOTS=/nonexistent CI=true scripts/test --no-lint
# hides pyenv completely, so only Debian's /usr/bin/python3.11 is left and 3.10/3.12/3.13 are
# reported missing; scripts/test must then exit non-zero and name them.

# Repository root: the parent of the directory holding this file.
CS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CS_VENVS="$CS_ROOT/.venvs"
# shellcheck disable=SC2034  # used by the scripts that source this file
CS_VERSIONS=(3.10 3.11 3.12 3.13)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if [[ -t 1 ]]; then
    _cs_bold=$'\e[1m' _cs_red=$'\e[31m' _cs_yellow=$'\e[33m' _cs_green=$'\e[32m' _cs_off=$'\e[0m'
else
    _cs_bold='' _cs_red='' _cs_yellow='' _cs_green='' _cs_off=''
fi

# Messages go to stderr by default so that `scripts/demo` keeps stdout for the demo itself;
# scripts/test sets CS_LOG_FD=1 so that its messages interleave with pytest's output.
CS_LOG_FD="${CS_LOG_FD:-2}"
cs_log()     { printf '%s\n' "$*" >&"$CS_LOG_FD"; }
cs_section() { printf '\n%s==> %s%s\n' "$_cs_bold" "$*" "$_cs_off" >&"$CS_LOG_FD"; }
cs_warn()    { printf '%sWARNING: %s%s\n' "$_cs_yellow" "$*" "$_cs_off" >&"$CS_LOG_FD"; }
cs_error()   { printf '%sERROR: %s%s\n' "$_cs_red" "$*" "$_cs_off" >&"$CS_LOG_FD"; }

# _cs_check_python CANDIDATE 3.X -> prints the real interpreter path (sys.executable) if usable.
_cs_check_python() {
    local cand="$1" want="$2"
    [[ -x "$cand" ]] || return 1
    "$cand" - "$want" 2>/dev/null <<'EOF'
import sys
if "%d.%d" % sys.version_info[:2] != sys.argv[1]:
    sys.exit(1)
import ensurepip, venv  # noqa: F401,E401  (needed to create a venv with pip)
print(sys.executable)
EOF
}

_cs_python_roots() {
    if [[ -n "${CANCELSCOPE_PYTHON_ROOTS+set}" ]]; then
        printf '%s\n' "$CANCELSCOPE_PYTHON_ROOTS" | tr ':' '\n'
        return
    fi
    if command -v pyenv >/dev/null 2>&1; then
        pyenv root 2>/dev/null || true
    fi
    [[ -n "${PYENV_ROOT:-}" ]] && printf '%s\n' "$PYENV_ROOT"
    printf '%s\n' /root/.pyenv
}

# cs_find_python 3.X -> prints the interpreter path and returns 0, or returns 1 if none found.
cs_find_python() {
    local want="$1" var cand found dir root
    var="CANCELSCOPE_PYTHON_${want/./_}"
    if [[ -n "${!var:-}" ]]; then
        if found="$(_cs_check_python "${!var}" "$want")"; then
            printf '%s\n' "$found"
            return 0
        fi
        cs_warn "$var=${!var} is not a usable Python $want; searching elsewhere"
    fi
    # Every python3.X on PATH, in order (a pyenv shim for a non-selected version fails to run).
    local -a path_dirs
    IFS=: read -r -a path_dirs <<<"$PATH"
    for dir in "${path_dirs[@]}"; do
        [[ -n "$dir" ]] || dir=.
        if found="$(_cs_check_python "$dir/python$want" "$want")"; then
            printf '%s\n' "$found"
            return 0
        fi
    done
    while IFS= read -r root; do
        [[ -n "$root" && -d "$root/versions" ]] || continue
        # Plain releases only (3.X.N, not 3.13.0t / 3.12-dev), highest patch first.
        while IFS= read -r cand; do
            if found="$(_cs_check_python "$root/versions/$cand/bin/python" "$want")"; then
                printf '%s\n' "$found"
                return 0
            fi
        done < <(for cand in "$root/versions/$want".*; do printf '%s\n' "${cand##*/}"; done |
                 grep -E "^${want//./\\.}\\.[0-9]+\$" | sort -t. -k3,3nr)
    done < <(_cs_python_roots)
    return 1
}

# cs_hash FILE... -> sha256 of the files' contents (uses whichever hashing tool exists).
cs_hash() {
    if command -v sha256sum >/dev/null 2>&1; then
        cat "$@" | sha256sum | cut -d' ' -f1
    else
        cat "$@" | shasum -a 256 | cut -d' ' -f1
    fi
}

# cs_ensure_venv DIR PYTHON EXTRAS
#   Create DIR as a venv of PYTHON (or recreate it if its python is broken or was built from a
#   different interpreter), then `pip install -e .[EXTRAS]` (plain `-e .` if EXTRAS is empty).
#   The install is skipped when DIR/.cs-stamp-<extras> matches the current pyproject.toml hash,
#   the interpreter and the extras.  Returns non-zero on failure.
cs_ensure_venv() {
    local venv="$1" python="$2" extras="$3"
    local vpy="$venv/bin/python" base_file="$venv/.cs-base-python"
    local spec="." stamp_name="plain"
    if [[ -n "$extras" ]]; then
        spec=".[$extras]"
        stamp_name="${extras//,/-}"
    fi
    local stamp="$venv/.cs-stamp-$stamp_name"

    mkdir -p "$CS_VENVS"
    # Serialise set-up of one venv between concurrent runs (several people share this tree).
    # fd 9 is held only for the duration of the set-up, not while tests run.
    local rc=0 locked=""
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$CS_VENVS/.$(basename "$venv").lock"
        flock 9
        locked=1
    fi
    _cs_ensure_venv_locked "$venv" "$python" "$spec" "$stamp" "$vpy" "$base_file" || rc=$?
    if [[ -n "$locked" ]]; then
        exec 9>&-
    fi
    return "$rc"
}

_cs_ensure_venv_locked() {
    local venv="$1" python="$2" spec="$3" stamp="$4" vpy="$5" base_file="$6"
    local recreate=""
    if [[ ! -e "$venv" ]]; then
        recreate="new"
    elif ! "$vpy" -c 'import pip' >/dev/null 2>&1; then
        recreate="its python/pip is broken"
    elif [[ "$(cat "$base_file" 2>/dev/null)" != "$python" ]]; then
        recreate="it was built from a different interpreter"
    fi
    if [[ -n "$recreate" ]]; then
        if [[ "$recreate" == new ]]; then
            cs_log "Creating $venv"
        else
            cs_log "Recreating $venv ($recreate)"
        fi
        rm -rf "$venv"
        "$python" -m venv "$venv" || { cs_error "could not create $venv with $python"; return 1; }
        printf '%s\n' "$python" >"$base_file"
    fi

    local want_stamp
    want_stamp="$(cs_hash "$CS_ROOT/pyproject.toml") $python $spec"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
        cs_log "Reusing $venv (pyproject.toml unchanged since last install of $spec)"
        return 0
    fi
    rm -f "$stamp"
    cs_log "Installing $spec into $venv"
    "$vpy" -m pip install -q --upgrade pip || { cs_error "pip upgrade failed in $venv"; return 1; }
    (cd "$CS_ROOT" && "$vpy" -m pip install -q -e "$spec") ||
        { cs_error "pip install -e '$spec' failed in $venv"; return 1; }
    printf '%s\n' "$want_stamp" >"$stamp"
}

# cs_ensure_postgres: under CI, install Debian's PostgreSQL server when it is missing, so the
# PostgreSQL variant of examples/zombie_queries.py is tested rather than skipped (its test
# starts a throw-away server with initdb/pg_ctl itself, and skips with the reason when it
# cannot).  Best effort: never fails the run; does nothing off CI or without root and apt-get.
cs_ensure_postgres() {
    if command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        cs_warn "PostgreSQL not installed (and no root apt-get): its example test will skip"
        return 0
    fi
    cs_log "Installing PostgreSQL (apt-get install postgresql) for the PostgreSQL example test"
    if ! { DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 ||
           { timeout 300 apt-get update -q >/dev/null 2>&1 &&
             DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1; }; }; then
        cs_warn "could not install PostgreSQL: its example test will skip"
    fi
    return 0
}
