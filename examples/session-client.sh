#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# session-client.sh COMMAND...: a QMP client on stdin and stdout (a
# session vmspawn_manager handed out) that negotiates, runs each
# COMMAND (without arguments) and prints its reply on stderr.
read -r greeting
echo '{"execute": "qmp_capabilities"}'
read -r reply
for cmd; do
    echo "{\"execute\": \"$cmd\"}"
    read -r reply
    echo "client  | $SESSION: $cmd -> $reply" >&2
done
