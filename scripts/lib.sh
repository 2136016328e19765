#!/usr/bin/env bash
# Shared by the project's scripts: install what they need, or stop with one line saying what is
# missing.

# require_redis_server: redis-server on the PATH, installed from Debian's packages if need be.
require_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
      else
        echo "missing: redis-server; install it with: sudo apt-get install redis-server" >&2
        exit 1
      fi
    fi
    echo "installing redis-server (apt-get)..." >&2
    if ! { $sudo apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null; }; then
      echo "missing: redis-server, and apt-get could not install it" >&2
      exit 1
    fi
  fi
  echo "missing: redis-server (install Redis 7 or later and put redis-server on the PATH)" >&2
  exit 1
}

# require_cargo: the Rust toolchain.
require_cargo() {
  command -v cargo >/dev/null 2>&1 ||
    { echo "missing: cargo; install Rust from https://rustup.rs" >&2; exit 1; }
}

# free_port: a TCP port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}
