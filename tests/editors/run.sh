#!/usr/bin/env bash
# A real editor on `dsl lsp` (issue 23): Neovim headless, its built-in LSP client attached to the
# server, opens examples/ou_response.sde with a misspelt name and checks the diagnostic's line and
# column, that fixing it clears it, hover, completion and formatting (test.lua). Prints PASS lines;
# exit 0 when all pass, 1 on a failure, 77 when Neovim is missing and cannot be installed.
# As root on Debian it installs Debian's neovim (apt-get) when missing, unless SDE_EDITORS_NO_INSTALL=1.
# SDE_DSL_DLL: the dsl.dll to run (default: the Release build of this checkout).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if ! command -v nvim >/dev/null 2>&1 && [ "${SDE_EDITORS_NO_INSTALL:-}" != 1 ] \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing neovim (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq neovim >/dev/null
fi
if ! command -v nvim >/dev/null 2>&1; then
  echo "SKIP: nvim not found (apt-get install neovim)"
  exit 77
fi

dll=${SDE_DSL_DLL:-$root/dsl/cli/bin/Release/net10.0/dsl.dll}
[ -f "$dll" ] || { echo "FAIL: $dll is not built (dotnet build -c Release)"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/d x = -theta \* x dt/d x = -thetta * x dt/' "$root/examples/ou_response.sde" > "$work/ou.sde"
grep -q thetta "$work/ou.sde"
# what formatting the fixed file must give: the command's own output
dotnet "$dll" format - < "$root/examples/ou_response.sde" > "$work/expected.sde"

nvim --version | head -n 1
SDE_DSL_DLL=$dll SDE_WORK=$work timeout 180 nvim --headless -u NONE -i NONE -n -c "luafile $root/tests/editors/test.lua"
