#!/usr/bin/env python3
"""Builds OCI image archives offline, for `ctr images import`.

  mkimage.py rootfs  OUT.tar NAME [--busybox PATH] [--file SRC:DEST ...] [--symlink LINK:TARGET ...]
                     [--entrypoint ARG ...]
      a busybox-static rootfs (applets as symlinks) plus extra files and symlinks
  mkimage.py wasm-layer OUT.tar NAME MODULE.wasm [MODULE.wasm ...] [--media-type TYPE]
      an image whose only layers are the modules themselves, with wasm layer media types
      (a component's or a core module's by default), each titled with its file name; the
      first module is the entrypoint. containerd 1.7+ can run it, 1.6 cannot unpack it

Everything is deterministic (fixed mtimes), so the same input gives the same digests.
"""
import argparse, gzip, hashlib, io, json, os, subprocess, sys, tarfile

MTIME = 0


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def add_dir(tar, name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, MTIME
    tar.addfile(info)


def add_bytes(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, MTIME
    tar.addfile(info, io.BytesIO(data))


def add_symlink(tar, name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime, info.mode = tarfile.SYMTYPE, target, MTIME, 0o777
    tar.addfile(info)


def busybox_applets(busybox):
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def rootfs_layer(busybox, files, symlinks=()):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev",
                  "root", "var", "app"]:
            add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        with open(busybox, "rb") as f:
            add_bytes(tar, "bin/busybox", f.read(), 0o755)
        for applet in busybox_applets(busybox):
            if applet == "bin/busybox":
                continue
            depth = applet.count("/")
            add_symlink(tar, applet, "../" * depth + "bin/busybox" if depth > 1 else "busybox" if applet.startswith("bin/") else "../bin/busybox")
        add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_bytes(tar, "etc/group", b"root:x:0:\nnobody:x:65534:\n")
        for spec in files:
            src, dest = spec.split(":", 1)
            with open(src, "rb") as f:
                add_bytes(tar, dest.lstrip("/"), f.read(), os.stat(src).st_mode & 0o777)
        for spec in symlinks:
            link, target = spec.split(":", 1)
            add_symlink(tar, link.lstrip("/"), target)
    return raw.getvalue()


def write_archive(out, name, layers, config_extra, arch="amd64", os_name="linux"):
    """layers: list of (media_type, data, uncompressed_tar_or_None[, annotations]). Only tar layers have a
    diff_id: containerd unpacks those into the rootfs and requires the config's rootfs.diff_ids
    to list exactly them; any other layer (a wasm module) is content the runtime reads itself."""
    blobs = {}
    layer_descs, diff_ids = [], []
    for media_type, data, uncompressed, *annotations in layers:
        digest, data = blob(data)
        blobs[digest] = data
        desc = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            desc["annotations"] = annotations[0]
        layer_descs.append(desc)
        if uncompressed is not None:
            diff_ids.append(blob(uncompressed)[0])
    config = {"architecture": arch, "os": os_name,
              "config": config_extra, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdigest, cdata = blob(json.dumps(config, sort_keys=True).encode())
    blobs[cdigest] = cdata
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cdigest, "size": len(cdata)},
                "layers": layer_descs}
    mdigest, mdata = blob(json.dumps(manifest, sort_keys=True).encode())
    blobs[mdigest] = mdata
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": mdigest, "size": len(mdata),
                            "platform": {"architecture": arch, "os": os_name},
                            "annotations": {"io.containerd.image.name": name,
                                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_bytes(tar, "index.json", json.dumps(index).encode())
        add_dir(tar, "blobs")
        add_dir(tar, "blobs/sha256")
        for digest, data in sorted(blobs.items()):
            add_bytes(tar, "blobs/sha256/" + digest.split(":", 1)[1], data)
    os.replace(tmp, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)
    r = sub.add_parser("rootfs")
    r.add_argument("out"); r.add_argument("name")
    r.add_argument("--busybox", default="/bin/busybox")
    r.add_argument("--file", action="append", default=[], help="SRC:DEST to add to the rootfs")
    r.add_argument("--symlink", action="append", default=[], help="LINK:TARGET to add to the rootfs")
    r.add_argument("--entrypoint", nargs="*", default=None)
    r.add_argument("--cmd", nargs="*", default=["/bin/sh"])
    w = sub.add_parser("wasm-layer")
    w.add_argument("out"); w.add_argument("name"); w.add_argument("modules", nargs="+")
    w.add_argument("--platform", default="linux/wasm",
                   help="OS/ARCH of the manifest (default linux/wasm; containerd's CRI before 2.0 "
                        "only sees images of the node's platform, e.g. linux/amd64)")
    w.add_argument("--media-type", default=None,
                   help="layer media type for every module (default: by module kind)")
    args = ap.parse_args()
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    if args.kind == "rootfs":
        tar = rootfs_layer(args.busybox, args.file, args.symlink)
        gz = gzip.compress(tar, mtime=0)
        config = {"Env": env, "Cmd": args.cmd, "WorkingDir": "/"}
        if args.entrypoint:
            config["Entrypoint"] = args.entrypoint
        write_archive(args.out, args.name,
                      [("application/vnd.oci.image.layer.v1.tar+gzip", gz, tar)], config)
    else:
        layers = []
        for path in args.modules:
            with open(path, "rb") as f:
                module = f.read()
            # A component's header version is 0x0d (layer 1); a core module's is 1.
            is_component = module[4:8] != b"\x01\x00\x00\x00"
            media = args.media_type or (
                "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm" if is_component
                else "application/vnd.wasm.content.layer.v1+wasm")
            title = {"org.opencontainers.image.title": os.path.basename(path)}
            layers.append((media, module, None, title))
        config = {"Env": env, "Entrypoint": ["/" + os.path.basename(args.modules[0])]}
        os_name, _, arch = args.platform.partition("/")
        write_archive(args.out, args.name, layers, config, arch=arch, os_name=os_name)


if __name__ == "__main__":
    sys.exit(main())
