#!/usr/bin/env bash
# Shared by the project's scripts: install what they need, or stop with one line saying what is
# missing.

# require_redis_server: redis-server on the PATH, installed from Debian's packages if need be.
require_redis_server() {
  require_debian_command redis-server redis-server
}

# require_debian_command COMMAND PACKAGE: COMMAND on the PATH, installing PACKAGE with apt-get
# when it is missing (see install_debian_package).
require_debian_command() {
  command -v "$1" >/dev/null 2>&1 || install_debian_package "$2"
}

# install_debian_package PACKAGE: apt-get install PACKAGE (as root, or with password-less sudo);
# otherwise stop with one line saying what to install.
install_debian_package() {
  local package=$1 sudo=""
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: the $package package (no apt-get here to install it)" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      echo "missing: $package; install it with: sudo apt-get install $package" >&2
      exit 1
    fi
  fi
  echo "installing $package (apt-get)..." >&2
  if ! { $sudo apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null; }; then
    echo "missing: $package, and apt-get could not install it" >&2
    exit 1
  fi
}

# require_cargo: the Rust toolchain.
require_cargo() {
  command -v cargo >/dev/null 2>&1 ||
    { echo "missing: cargo; install Rust from https://rustup.rs" >&2; exit 1; }
}

# free_port: a TCP port nothing listens on right now, below the kernel's ephemeral range (a port
# in that range may be taken by any outgoing connection before our process binds it).
free_port() {
  python3 - 2>/dev/null <<'EOF' || echo $((2000 + RANDOM % 20000))
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
while True:
    p = random.randrange(2000, low)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        pass
EOF
}
