# shellcheck shell=bash
# Installs the Debian packages behind commands that are missing, for scripts/test and
# scripts/bench-*. Source it, declare what you need, then install:
#
#   . scripts/lib/deps.sh
#   need git git              # need COMMAND PACKAGE: PACKAGE provides COMMAND
#   need tmux tmux
#   need_package busybox-static   # a package checked with dpkg, when a command is not enough
#   install_needed            # apt-get update (once) + install, only when something is missing
#
# It never calls apt when everything is present, and it fails loudly when a command is still
# missing afterwards: a test that cannot get its real part must not pass by skipping.

_deps_commands=()   # commands declared with need, in order
_deps_packages=()   # the package for each of them
_deps_only_packages=() # packages declared with need_package
_deps_apt_updated=""

need() {
  _deps_commands+=("$1")
  _deps_packages+=("$2")
}

# need_package PACKAGE: PACKAGE itself must be installed, for when another package provides the
# same command (busybox-static's /bin/busybox is static, busybox's is not).
need_package() {
  _deps_only_packages+=("$1")
}

_deps_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

install_needed() {
  local i p missing=()
  for i in "${!_deps_commands[@]}"; do
    command -v "${_deps_commands[$i]}" >/dev/null 2>&1 || missing+=("${_deps_packages[$i]}")
  done
  for p in "${_deps_only_packages[@]}"; do
    _deps_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    local pkgs sudo=()
    mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing missing Debian packages: ${pkgs[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "error: apt-get is not available; install these by hand: ${pkgs[*]}" >&2
      return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
      if ! command -v sudo >/dev/null 2>&1; then
        echo "error: installing ${pkgs[*]} needs root (or sudo)" >&2
        return 1
      fi
      sudo=(sudo -n)
    fi
    # Wait for another apt (a concurrent script) rather than failing on its lock.
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq)
    if [ -z "$_deps_apt_updated" ]; then
      "${apt[@]}" update
      _deps_apt_updated=1
    fi
    "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}" >/dev/null  # errors go to stderr
  fi
  for i in "${!_deps_commands[@]}"; do
    if ! command -v "${_deps_commands[$i]}" >/dev/null 2>&1; then
      echo "error: '${_deps_commands[$i]}' is still missing after installing ${_deps_packages[$i]}" >&2
      return 1
    fi
  done
  for p in "${_deps_only_packages[@]}"; do
    if ! _deps_installed "$p"; then
      echo "error: package $p is still not installed" >&2
      return 1
    fi
  done
}

# Puts cargo on PATH when rustup installed it but the shell was not set up for it (CI, cron).
use_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-/root}/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "${HOME:-/root}/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not on PATH (install Rust with rustup)" >&2
    return 1
  fi
}
