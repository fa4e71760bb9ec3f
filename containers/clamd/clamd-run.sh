#!/bin/sh
# clamd in the foreground on 127.0.0.1:$CLAMD_PORT (3310).
set -eu
cat > /etc/clamav/clamd-mailwarden.conf <<CONF
Foreground yes
LocalSocket /run/clamav/clamd.ctl
TCPSocket ${CLAMD_PORT:-3310}
TCPAddr 127.0.0.1
User root
DatabaseDirectory /var/lib/clamav
LogSyslog no
LogVerbose no
StreamMaxLength 64M
MaxFileSize 64M
MaxScanSize 256M
MaxThreads 4
DisableCache ${CLAMD_DISABLE_CACHE:-no}
CONF
exec clamd --config-file=/etc/clamav/clamd-mailwarden.conf
