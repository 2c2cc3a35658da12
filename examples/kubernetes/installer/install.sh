#!/bin/sh
# Installs amphi on a Kubernetes node from inside a privileged pod (installer/daemonset.yaml)
# whose host filesystem is mounted at $HOST_ROOT:
#   1. copies containerd-shim-amphi-v1 to $HOST_ROOT/usr/local/bin (atomically: temp + rename)
#   2. adds the CRI runtime handler `amphi` to containerd's config, once (idempotent: the
#      block between the "# BEGIN amphi" / "# END amphi" markers is written only if missing),
#      in the form the node's containerd reads:
#        containerd 2.x (config version 3): [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.amphi]
#        containerd 1.6/1.7 (version 2):    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.amphi]
#        containerd 1.x (version 1):        [plugins.cri.containerd.runtimes.amphi]
#   3. restarts containerd (in the host's namespaces, via nsenter into pid 1) when it changed
#      anything; running pods keep running (their shims are separate processes).
#
#   install.sh [install|uninstall]
# Env:
#   HOST_ROOT          host filesystem mount point (default /host)
#   CONTAINERD_CONFIG  containerd config path on the host (default /etc/containerd/config.toml;
#                      k3s: /var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl)
#   SHIM_SOURCE        the binary to install (default /assets/containerd-shim-amphi-v1)
#   RUNTIME_OPTIONS    optional TOML lines for the handler's `options` table (amphi's runtime
#                      options: runtimeoptions.v1.Options, e.g. ConfigPath = '/etc/amphi/config.toml')
#   RESTART            1 (default): restart containerd after a change; 0: leave it to you
#   RESTART_CMD        command run on the host to restart containerd
#                      (default: systemctl restart containerd)
#   CONTAINERD_MAJOR   1 or 2 to skip detection (default: from the config's `version`, else from
#                      `containerd --version` on the host)
set -eu

HOST_ROOT=${HOST_ROOT:-/host}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
SHIM_SOURCE=${SHIM_SOURCE:-/assets/containerd-shim-amphi-v1}
RESTART=${RESTART:-1}
RESTART_CMD=${RESTART_CMD:-systemctl restart containerd}
SHIM_NAME=containerd-shim-amphi-v1
BEGIN='# BEGIN amphi (written by the amphi node installer; remove the block to uninstall)'
END='# END amphi'

cfg="$HOST_ROOT$CONTAINERD_CONFIG"
log() { echo "amphi-installer: $*"; }
die() { echo "amphi-installer: ERROR: $*" >&2; exit 1; }

# Runs a command in the host's namespaces (needs hostPID: true and privileges).
on_host() {
    if [ "$HOST_ROOT" = / ]; then
        sh -c "$*"
    else
        nsenter --target 1 --mount --uts --ipc --net --pid -- sh -c "$*"
    fi
}

config_version() { # prints the `version = N` of the config, or 1 when there is none
    v=$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$cfg" 2>/dev/null | head -n 1)
    echo "${v:-1}"
}

containerd_major() {
    if [ -n "${CONTAINERD_MAJOR:-}" ]; then echo "$CONTAINERD_MAJOR"; return; fi
    if [ -s "$cfg" ]; then
        case $(config_version) in
            3) echo 2; return ;;
            2|1) echo 1; return ;;
        esac
    fi
    v=$(on_host "containerd --version" 2>/dev/null | awk '{print $3}' | sed 's/^v//')
    case "$v" in
        1.*) echo 1 ;;
        2.*) echo 2 ;;
        *) die "cannot tell the containerd version (set CONTAINERD_MAJOR=1 or 2)" ;;
    esac
}

snippet() { # $1 = containerd major, $2 = config version
    echo "$BEGIN"
    if [ "$1" = 2 ]; then
        t="plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.amphi"
    elif [ "$2" = 1 ]; then
        t="plugins.cri.containerd.runtimes.amphi"
    else
        t='plugins."io.containerd.grpc.v1.cri".containerd.runtimes.amphi'
    fi
    echo "[$t]"
    echo "  runtime_type = \"io.containerd.amphi.v1\""
    if [ -n "${RUNTIME_OPTIONS:-}" ]; then
        echo "[$t.options]"
        printf '%s\n' "$RUNTIME_OPTIONS" | sed 's/^/  /'
    fi
    echo "$END"
}

install_binary() {
    [ -f "$SHIM_SOURCE" ] || die "$SHIM_SOURCE missing in the installer image"
    dest="$HOST_ROOT/usr/local/bin"
    mkdir -p "$dest"
    if [ -f "$dest/$SHIM_NAME" ] && cmp -s "$SHIM_SOURCE" "$dest/$SHIM_NAME"; then
        log "$dest/$SHIM_NAME is up to date"
        return 0
    fi
    cp "$SHIM_SOURCE" "$dest/.$SHIM_NAME.new"
    chmod 0755 "$dest/.$SHIM_NAME.new"
    # rename(2): running shims keep their old inode, new pods get the new binary.
    mv -f "$dest/.$SHIM_NAME.new" "$dest/$SHIM_NAME"
    log "installed $dest/$SHIM_NAME"
}

patch_config() { # returns 0 when it changed the config, 1 when it was already there
    mkdir -p "$(dirname "$cfg")"
    if [ ! -s "$cfg" ]; then
        # No config: write containerd's defaults first, so the file stays a complete config.
        on_host "containerd config default" > "$cfg.amphi-tmp" 2>/dev/null || : > "$cfg.amphi-tmp"
        mv -f "$cfg.amphi-tmp" "$cfg"
        log "wrote containerd's default config to $CONTAINERD_CONFIG"
    fi
    if grep -qF "$BEGIN" "$cfg"; then
        log "$CONTAINERD_CONFIG already has the amphi handler"
        return 1
    fi
    if grep -Eq "containerd\.runtimes\.(amphi|\"amphi\"|'amphi')\]" "$cfg"; then
        log "$CONTAINERD_CONFIG already defines a runtime named amphi (not by this installer): left as is"
        return 1
    fi
    major=$(containerd_major)
    [ -f "$cfg.amphi-backup" ] || cp -p "$cfg" "$cfg.amphi-backup"
    { cat "$cfg"; [ -z "$(tail -c 1 "$cfg")" ] || echo; snippet "$major" "$(config_version)"; } > "$cfg.amphi-tmp"
    mv -f "$cfg.amphi-tmp" "$cfg"
    log "added the amphi runtime handler (containerd $major.x) to $CONTAINERD_CONFIG"
    return 0
}

unpatch_config() {
    [ -f "$cfg" ] && grep -qF "$BEGIN" "$cfg" || { log "no amphi handler in $CONTAINERD_CONFIG"; return 1; }
    awk -v b="$BEGIN" -v e="$END" '$0 == b {skip=1; next} skip && $0 == e {skip=0; next} !skip' "$cfg" > "$cfg.amphi-tmp"
    mv -f "$cfg.amphi-tmp" "$cfg"
    log "removed the amphi runtime handler from $CONTAINERD_CONFIG"
    return 0
}

restart_containerd() {
    if [ "$RESTART" != 1 ]; then
        log "RESTART=$RESTART: restart containerd yourself for the change to take effect"
        return 0
    fi
    log "restarting containerd: $RESTART_CMD"
    on_host "$RESTART_CMD" || die "restarting containerd failed ($RESTART_CMD)"
}

case "${1:-install}" in
    install)
        install_binary
        if patch_config; then restart_containerd; fi
        log "done: pods with runtimeClassName: amphi can run on this node"
        ;;
    uninstall)
        if unpatch_config; then restart_containerd; fi
        rm -f "$HOST_ROOT/usr/local/bin/$SHIM_NAME"
        log "removed $HOST_ROOT/usr/local/bin/$SHIM_NAME"
        ;;
    *) die "usage: install.sh [install|uninstall]" ;;
esac
