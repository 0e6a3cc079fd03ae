# Sourced by scripts/demo and scripts/test: run scripts/install.sh unless ./.venv is up to date with
# the files that say what to install.
VENV="${VENV:-.venv}"
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ agent-clis/package-lock.json -nt "$stamp" ] \
   || [ scripts/install.sh -nt "$stamp" ] || [ ! -d agent-clis/node_modules ]; then
  bash scripts/install.sh
  touch "$stamp"
fi
