#!/usr/bin/env bash
# prepare-rootfs.sh ROOTFS: what build.sh does to the fresh debootstrap tree before `docker import`,
# as the official debian:trixie-slim image does: the files of rootfs/ (apt sources with updates
# and security, no recommends, no package cache, no docs for later installs, no service started
# by a package install), and no documentation, man pages, translations or caches in the tree.
set -euo pipefail
rootfs=${1:?usage: prepare-rootfs.sh ROOTFS}
here=$(cd "$(dirname "$0")" && pwd)

cp -R --preserve=mode "$here/rootfs/." "$rootfs/"
rm -f "$rootfs/etc/apt/sources.list"
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/lintian/*
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old
