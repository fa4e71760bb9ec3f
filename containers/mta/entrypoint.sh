#!/bin/sh
# mailwarden-entrypoint postfix|policyd|milter|sink|ROLE-less command
# One image, one process per container. Settings come from the environment:
#   MW_SMTPD_PORT (25)          Postfix's smtpd port (host networking: one per MTA)
#   MW_RELAYHOST ([127.0.0.1]:2525)  where Postfix hands all mail on (the sink in tests)
#   MW_POLICYD_PORT (10031)     policyd on 127.0.0.1
#   MW_MILTER_PORT (8899)       milter on 127.0.0.1
#   MW_CLAMD (inet:127.0.0.1:3310)
#   MW_REDIS_URL (redis://127.0.0.1:6379/0)
#   MW_SENTINELS ("")           "127.0.0.1:26379,127.0.0.1:26380,..." -> redis.sentinels
#   MW_SENTINEL_SERVICE (mymaster)
#   MW_RATE_LIMIT ("")          ratelimit.limit (empty: the profile's)
#   MW_ON_REDIS_ERROR (accept)  policyd.on_redis_error
#   MW_AUTH (true)              auth.enabled (false where no DNS is reachable)
#   MW_XCLIENT (no)             yes: trust XCLIENT from 127.0.0.0/8 (tests only)
#   MW_HOSTNAME (mail.ninhbinh.gov.vn), MW_CONFIG (generated: /etc/mailwarden/mailwarden.toml;
#                                a mounted file there is used as is)
set -eu
role=${1:-postfix}
cfg=${MW_CONFIG:-/etc/mailwarden/mailwarden.toml}

write_config() {
  [ -f "$cfg" ] && [ ! -f /run/mailwarden/generated ] && return 0
  sentinels=""
  if [ -n "${MW_SENTINELS:-}" ]; then
    sentinels=$(echo "$MW_SENTINELS" | sed 's/[^,][^,]*/"&"/g; s/,/, /g')
  fi
  {
    echo "[profile]"
    echo "directory = \"/etc/mailwarden/profiles\""
    echo "[policyd]"
    echo "listen = \"inet:127.0.0.1:${MW_POLICYD_PORT:-10031}\""
    echo "on_redis_error = \"${MW_ON_REDIS_ERROR:-accept}\""
    echo "lock_snapshot = \"/var/lib/mailwarden/locks-${MW_POLICYD_PORT:-10031}.json\""
    echo "[milter]"
    echo "listen = \"inet:127.0.0.1:${MW_MILTER_PORT:-8899}\""
    echo "[antivirus]"
    echo "clamd = \"${MW_CLAMD:-inet:127.0.0.1:3310}\""
    echo "[auth]"
    echo "enabled = ${MW_AUTH:-true}"
    echo "[redis]"
    echo "url = \"${MW_REDIS_URL:-redis://127.0.0.1:6379/0}\""
    [ -n "$sentinels" ] && echo "sentinels = [$sentinels]"
    echo "sentinel_service = \"${MW_SENTINEL_SERVICE:-mymaster}\""
    if [ -n "${MW_RATE_LIMIT:-}" ]; then echo "[ratelimit]"; echo "limit = $MW_RATE_LIMIT"; fi
  } > "$cfg"
  touch /run/mailwarden/generated
}

postfix_config() {
  d=/etc/postfix
  # Debian's "No configuration" install leaves no main.cf/master.cf: start from its own
  [ -f $d/main.cf ] || : > $d/main.cf
  [ -f $d/master.cf ] || cp /usr/share/postfix/master.cf.dist $d/master.cf
  postconf -e \
    "compatibility_level = 3.6" "myhostname = ${MW_HOSTNAME:-mail.ninhbinh.gov.vn}" \
    "mydomain = ninhbinh.gov.vn" "myorigin = \$myhostname" "mydestination =" \
    "local_recipient_maps =" "relay_domains = ninhbinh.gov.vn" \
    "relayhost = ${MW_RELAYHOST:-[127.0.0.1]:2525}" "inet_interfaces = loopback-only" \
    "inet_protocols = ipv4" "mynetworks = 127.0.0.0/8" \
    "smtp_dns_support_level = disabled" "disable_dns_lookups = yes" \
    "smtpd_peername_lookup = no" "maillog_file = /dev/stdout" \
    "alias_maps =" "alias_database =" "biff = no" "smtputf8_enable = yes" \
    "message_size_limit = 48000000" "mailbox_size_limit = 0" \
    "queue_run_delay = 1s" "minimal_backoff_time = 1s" "maximal_backoff_time = 5s" \
    "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination" \
    "smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_non_fqdn_sender, check_policy_service inet:127.0.0.1:${MW_POLICYD_PORT:-10031}" \
    "smtpd_end_of_data_restrictions = check_policy_service inet:127.0.0.1:${MW_POLICYD_PORT:-10031}" \
    "smtpd_policy_service_default_action = 451 4.3.5 Policy service unavailable" \
    "smtpd_policy_service_request_limit = 0" "swap_bangpath = no" "allow_percent_hack = no" \
    "smtpd_milters = inet:127.0.0.1:${MW_MILTER_PORT:-8899}" \
    "non_smtpd_milters = inet:127.0.0.1:${MW_MILTER_PORT:-8899}" \
    "milter_default_action = tempfail" "milter_protocol = 6" \
    "milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}" \
    "milter_rcpt_macros = i {rcpt_addr} {rcpt_host} {rcpt_mailer}" \
    "milter_end_of_data_macros = i" "disable_mime_output_conversion = yes"
  if [ "${MW_XCLIENT:-no}" = yes ] || [ "${MW_XCLIENT:-no}" = true ]; then
    postconf -e "smtpd_authorized_xclient_hosts = 127.0.0.0/8" "smtpd_sasl_auth_enable = yes"
  fi
  # One smtpd on this MTA's port; no chroot (the queue has no copy of /etc); postlogd
  # carries maillog_file to the container's stdout.
  postconf -M# smtp/inet
  postconf -M "${MW_SMTPD_PORT:-25}/inet=${MW_SMTPD_PORT:-25} inet n - n - - smtpd"
  postconf -F '*/*/chroot = n'
  postconf -M "postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd"
}

case "$role" in
  postfix)
    postfix_config
    exec postfix start-fg ;;
  policyd|milter)
    write_config
    exec mailwarden --config "$cfg" "$role" ;;
  sink)  # tests: every message as a file in /sink (bind-mount it)
    exec smtp-sink -u postfix -d "/sink/%Y%m%d%H%M%S." "127.0.0.1:${MW_SINK_PORT:-2525}" 256 ;;
  config)
    write_config; cat "$cfg" ;;
  *) exec "$@" ;;
esac
