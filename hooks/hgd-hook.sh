#!/bin/sh
# hgd-hook: tells the hgd daemon that HEAD may have moved (installed by `hgd hooks install`).
# It never blocks or fails the git command: the notification runs in the background with its output
# and errors discarded. A hook that was here before hgd's runs next, and its exit status is returned.
hgd='@HGD@'
[ -x "$hgd" ] || hgd=$(command -v hgd 2>/dev/null)
if [ -n "$hgd" ]; then
  ("$hgd" notify </dev/null >/dev/null 2>&1 &)
fi
chained="$0.hgd-chained"
if [ -x "$chained" ]; then
  exec "$chained" "$@"
fi
exit 0
