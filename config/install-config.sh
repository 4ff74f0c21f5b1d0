#!/bin/sh
# SPDX-License-Identifier: MIT
# install-config.sh ETCDIR SVC...: installs ETCDIR/SVC/config.toml from config.toml.default when
# there is none yet (under $DESTDIR). An existing configuration is never replaced. The file stays
# root's until systemd-tmpfiles gives it to the service's user (the tmpfiles.d "z" lines).
set -eu
etc="${DESTDIR:-}$1"
shift
for svc in "$@"; do
        dest="$etc/$svc/config.toml"
        if [ -e "$dest" ] || [ -L "$dest" ]; then
                continue
        fi
        install -m 0600 "$etc/$svc/config.toml.default" "$dest"
done
