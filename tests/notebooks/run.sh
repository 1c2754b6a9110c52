#!/usr/bin/env bash
# Runs docs/notebooks/tour.dib headless with dotnet-repl (the .NET Interactive kernel of Polyglot
# Notebooks, as a command-line tool) on the packages built from this working tree, then checks the
# executed notebook (tests/notebooks/check.py: no cell failed, the results displayed as HTML tables
# with inline SVG plots, the numbers against closed forms). Called by .ci/run after the build.
#
#   tests/notebooks/run.sh            run and check (the executed notebook goes to a temporary file)
#   tests/notebooks/run.sh --update   also write it to docs/notebooks/tour.ipynb (the committed one)
#
# Needs the Release build of core and dsl/lang (dotnet build), python3, and dotnet-repl: taken from
# PATH or DOTNET_REPL, else installed into a tool folder (DOTNET_REPL_DIR, default ~/.dotnet/tools-sde).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)
version=0.3.259
start=$SECONDS

repl=${DOTNET_REPL:-}
if [[ -z "$repl" ]]; then
    if command -v dotnet-repl > /dev/null; then
        repl=$(command -v dotnet-repl)
    else
        dir=${DOTNET_REPL_DIR:-$HOME/.dotnet/tools-sde}
        if [[ ! -x "$dir/dotnet-repl" ]]; then
            echo "notebooks: installing dotnet-repl $version into $dir"
            dotnet tool install --tool-path "$dir" dotnet-repl --version "$version" > /dev/null
        fi
        repl=$dir/dotnet-repl
    fi
fi

# The packages of this tree, under the version the notebook references (0.1.0), in nupkg/ (which
# docs/notebooks/nuget.config names). A package of that version restored before stays in the NuGet
# cache, and the F# kernel keeps what `#r "nuget: ..."` resolved to in ~/.packagemanagement (keyed by
# the reference, not by the package's contents), so the kernel runs with a home and a package cache of
# its own, both new (the other packages are restored from the usual sources).
dotnet pack core -c Release --no-build -o nupkg -nologo -v q > /dev/null
dotnet pack dsl/lang -c Release --no-build -o nupkg -nologo -v q > /dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export NUGET_PACKAGES="$work/packages"
mkdir -p "$work/home"

out="$work/tour.ipynb"
(
    cd docs/notebooks
    HOME="$work/home" DOTNET_CLI_HOME="$work/home" timeout 600 "$repl" --run tour.dib --default-kernel fsharp --exit-after-run --output-format ipynb --output-path "$out" > "$work/repl.log" 2>&1
) || echo "notebooks: dotnet-repl exited $? (a cell failed; the check below says which)"

if [[ ! -s "$out" ]]; then
    echo "notebooks: no notebook written; dotnet-repl's output:"
    tail -n 40 "$work/repl.log"
    echo "notebook: 0 passed, 1 failed"
    exit 1
fi

# the executed notebook without what changes from run to run on the same results (the cells' clock
# times, the package restore's progress messages)
python3 tests/notebooks/tidy.py "$out"

if [[ "${1:-}" == "--update" ]]; then
    python3 tests/notebooks/check.py "$out" "$root"
else
    # and the committed notebook is this run's, up to the numbers
    python3 tests/notebooks/check.py "$out" "$root" docs/notebooks/tour.ipynb
fi

if [[ "${1:-}" == "--update" ]]; then
    cp "$out" docs/notebooks/tour.ipynb
    echo "notebooks: wrote docs/notebooks/tour.ipynb"
fi
echo "notebooks: done in $((SECONDS - start)) s"
