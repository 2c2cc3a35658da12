#!/usr/bin/env python3
"""Builds OCI image archives offline, for `ctr images import`.

  mkimage.py rootfs  OUT.tar NAME [--busybox PATH] [--file SRC:DEST ...] [--entrypoint ARG ...]
      a busybox-static rootfs (applets as symlinks) plus extra files
  mkimage.py wasm-layer OUT.tar NAME MODULE.wasm [--component]
      an image whose only layer is the module itself, with a wasm layer media type

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


def rootfs_layer(busybox, files):
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
    return raw.getvalue()


def write_archive(out, name, layers, config_extra, arch="amd64"):
    """layers: list of (media_type, data, diff_id_data_or_None)."""
    blobs = {}
    layer_descs, diff_ids = [], []
    for media_type, data, uncompressed in layers:
        digest, data = blob(data)
        blobs[digest] = data
        layer_descs.append({"mediaType": media_type, "digest": digest, "size": len(data)})
        diff_ids.append(blob(uncompressed if uncompressed is not None else data)[0])
    config = {"architecture": arch, "os": "linux",
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
                            "platform": {"architecture": arch, "os": "linux"},
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
    r.add_argument("--entrypoint", nargs="*", default=None)
    r.add_argument("--cmd", nargs="*", default=["/bin/sh"])
    w = sub.add_parser("wasm-layer")
    w.add_argument("out"); w.add_argument("name"); w.add_argument("module")
    w.add_argument("--component", action="store_true")
    args = ap.parse_args()
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    if args.kind == "rootfs":
        tar = rootfs_layer(args.busybox, args.file)
        gz = gzip.compress(tar, mtime=0)
        config = {"Env": env, "Cmd": args.cmd, "WorkingDir": "/"}
        if args.entrypoint:
            config["Entrypoint"] = args.entrypoint
        write_archive(args.out, args.name,
                      [("application/vnd.oci.image.layer.v1.tar+gzip", gz, tar)], config)
    else:
        with open(args.module, "rb") as f:
            module = f.read()
        media = ("application/vnd.bytecodealliance.wasm.component.layer.v0+wasm" if args.component
                 else "application/vnd.wasm.content.layer.v1+wasm")
        config = {"Env": env, "Entrypoint": ["/" + os.path.basename(args.module)]}
        write_archive(args.out, args.name, [(media, module, None)], config, arch="wasm")


if __name__ == "__main__":
    sys.exit(main())
