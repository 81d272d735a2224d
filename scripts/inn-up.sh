#!/bin/bash
# inn-up.sh — install (if missing), configure and start INN 2.7 (Debian inn2) on loopback.
# Idempotent: a second run with unchanged config only checks that everything answers.
#
#   127.0.0.1:$INN_PORT      (119)  no auth, POST allowed       (innd hands readers to nnrpd)
#   127.0.0.1:$INN_AUTH_PORT (1190) AUTHINFO USER/PASS required  (nnrpd -D -c readers-auth.conf)
#   127.0.0.1:$INN_TLS_PORT  (563)  implicit TLS + AUTHINFO      (nnrpd -D -S, self-signed cert)
#   user/password: $INN_USER/$INN_PASS (testuser/testpass); groups: $INN_GROUPS
#   INN_STORAGE=tradspool|timehash|cnfs (default tradspool; see REPORT.md, timecaf is not offered:
#   its cancels are lazy, so STAT keeps answering 223 after ctlinnd cancel).
# Must run as root (apt-get, innbind for ports < 1024); innd/nnrpd themselves run as user news.
set -euo pipefail
INN_PORT=${INN_PORT:-119}; INN_AUTH_PORT=${INN_AUTH_PORT:-1190}; INN_TLS_PORT=${INN_TLS_PORT:-563}
INN_USER=${INN_USER:-testuser}; INN_PASS=${INN_PASS:-testpass}
INN_GROUPS=${INN_GROUPS:-"alt.binaries.test alt.binaries.misc"}
INN_STORAGE=${INN_STORAGE:-tradspool}
E=/etc/news; BIN=/usr/lib/news/bin; DB=/var/lib/news; RUN=/run/news
asnews() { runuser -u news -- "$@"; }

# --- 1. install -------------------------------------------------------------------------------
if ! dpkg-query -W -f='${Status}' inn2 2>/dev/null | grep -q 'ok installed'; then
  # postinst dies with "innconfval: hostname does not resolve or domain not set in inn.conf"
  # when `hostname --fqdn` has no dot (here: "vm"); set domain in the unpacked inn.conf and retry.
  apt-get update -qq >/tmp/inn-apt.log 2>&1 || true   # a fresh machine may have no package lists yet
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends inn2 >>/tmp/inn-apt.log 2>&1 \
    || { sed -i -E 's/^#?domain:.*/domain: localdomain/' $E/inn.conf 2>/dev/null || true; dpkg --configure -a >>/tmp/inn-apt.log 2>&1 || true; }
  dpkg-query -W -f='${Status}' inn2 | grep -q 'ok installed' || { tail -20 /tmp/inn-apt.log; exit 1; }
fi

# openssl makes the password hash and the TLS cert; minimal images may lack the binary.
if ! command -v openssl >/dev/null; then
  { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl; } >>/tmp/inn-apt.log 2>&1 \
    || { tail -20 /tmp/inn-apt.log; exit 1; }
fi

# --- 2. configure -----------------------------------------------------------------------------
set_conf() {  # set_conf KEY VALUE  -> "KEY: VALUE" in inn.conf (replace, or append)
  if grep -qE "^#?$1:" $E/inn.conf; then sed -i -E "s|^#?$1:.*|$1: $2|" $E/inn.conf; else echo "$1: $2" >>$E/inn.conf; fi
}
set_conf domain localdomain            # hostname has no dot -> innd refuses to start without it
set_conf pathhost inn.localdomain
set_conf bindaddress 127.0.0.1         # IPv4 loopback only (no IPv6 socket since bindaddress6 unset)
set_conf port "$INN_PORT"
set_conf maxartsize 5000000            # innd limit (wire bytes incl. headers); default 1000000
set_conf localmaxartsize 5000000       # nnrpd limit for POST; default 1000000
set_conf artcutoff 0                   # default 10: articles with an older Date: are rejected
set_conf doinnwatch false              # no innwatch helper process
set_conf nnrpdloadlimit 0              # don't refuse readers when the load average is high
set_conf nnrpdflags '"-n"'             # no reverse DNS for clients
set_conf addinjectionpostinghost false
set_conf status 0                      # else innd logs "cant open /var/www/inn/inn_status.html" to errlog
set_conf tlscapath $E; set_conf tlscertfile $E/cert.pem; set_conf tlskeyfile $E/key.pem

# loopback must NOT be an incoming.conf peer, else innd treats 127.0.0.1 as a feed
# (no POST until MODE READER); nnrpd injects into innd over a UNIX socket anyway.
printf 'streaming: true\nmax-connections: 8\n' >$E/incoming.conf
cat >$E/readers.conf <<'EOF'
auth "localhost" {
    hosts: "localhost, 127.0.0.1, ::1, stdin"
    default: "<localhost>"
}
access "localhost" {
    users: "<localhost>"
    newsgroups: "*"
    access: RPA
}
EOF
cat >$E/readers-auth.conf <<'EOF'
auth "users" {
    hosts: "localhost, 127.0.0.1, ::1"
    auth: "ckpasswd -f /etc/news/newsusers"
}
access "users" {
    users: "*"
    newsgroups: "*"
    access: RPA
}
EOF
# ckpasswd -f: "user:crypt(3)-hash" lines; keep the hash stable so the config hash is stable
if ! grep -q "^$INN_USER:" $E/newsusers 2>/dev/null || [ "$(cat $E/newsusers.plain 2>/dev/null)" != "$INN_USER:$INN_PASS" ]; then
  echo "$INN_USER:$(openssl passwd -5 "$INN_PASS")" >$E/newsusers; echo "$INN_USER:$INN_PASS" >$E/newsusers.plain
  chown root:news $E/newsusers $E/newsusers.plain; chmod 640 $E/newsusers $E/newsusers.plain
fi
printf '/remember/:11\n*:A:never:never:never\n' >$E/expire.ctl   # never expire anything
case $INN_STORAGE in
  cnfs) mkdir -p /var/spool/news/cycbuffs
        [ -f /var/spool/news/cycbuffs/one ] || truncate -s 8G /var/spool/news/cycbuffs/one  # sparse is fine here
        chown -R news:news /var/spool/news/cycbuffs
        printf 'cycbuffupdate:25\nrefreshinterval:30\ncycbuff:ONE:/var/spool/news/cycbuffs/one:8388608\nmetacycbuff:BIG:ONE\n' >$E/cycbuff.conf
        printf 'method cnfs {\n  newsgroups: *\n  class: 0\n  options: BIG\n}\n' >$E/storage.conf ;;
  tradspool|timehash) printf 'method %s {\n  newsgroups: *\n  class: 0\n}\n' "$INN_STORAGE" >$E/storage.conf ;;
  *) echo "unsupported INN_STORAGE=$INN_STORAGE" >&2; exit 2 ;;
esac
if [ ! -f $E/cert.pem ]; then   # self-signed cert for the TLS port (and STARTTLS)
  openssl req -new -x509 -nodes -days 3650 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -newkey rsa:2048 -keyout $E/key.pem -out $E/cert.pem 2>/dev/null
  chown news:news $E/cert.pem $E/key.pem; chmod 640 $E/cert.pem; chmod 600 $E/key.pem
fi
chown root:news $E/readers.conf $E/readers-auth.conf; chmod 644 $E/readers.conf $E/readers-auth.conf
# empty history database if missing (fresh install makes one; inn-down.sh --purge removes it)
if [ ! -f $DB/history ]; then
  (cd $DB && : >history && chown news:news history && asnews $BIN/makedbz -i -o -s 300000)
fi
touch $DB/.news.daily; chown news:news $DB/.news.daily   # else rc.news tries to mail "run news.daily?"

# --- 3. (re)start -----------------------------------------------------------------------------
mkdir -p $RUN; chown news:news $RUN; chmod 775 $RUN
HASH=$( (cat $E/inn.conf $E/incoming.conf $E/storage.conf $E/expire.ctl; echo "$INN_AUTH_PORT $INN_TLS_PORT") | sha1sum | cut -c1-40)
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running $RUN/innd.pid && [ "$(cat $RUN/peers.hash 2>/dev/null)" != "$HASH" ]; then
  bash "$(dirname "$0")/inn-down.sh" >/dev/null   # config changed: full restart (works without +x)
fi
if ! running $RUN/innd.pid; then
  asnews $BIN/rc.news >/dev/null        # starts innd (as news; innbind binds the port)
  echo "$HASH" >$RUN/peers.hash
fi
running $RUN/nnrpd-$INN_AUTH_PORT.pid || asnews $BIN/nnrpd -D -b 127.0.0.1 -p "$INN_AUTH_PORT" -c readers-auth.conf -n
running $RUN/nnrpd-$INN_TLS_PORT.pid || asnews $BIN/nnrpd -D -b 127.0.0.1 -p "$INN_TLS_PORT" -S -c readers-auth.conf -n

# --- 4. wait for a 200/201 greeting on every port (TLS port: after the handshake) ---------------
python3 - "$INN_PORT" "$INN_AUTH_PORT" "$INN_TLS_PORT" <<'EOF'
import socket, ssl, sys, time
for i, port in enumerate(map(int, sys.argv[1:])):
    deadline = time.time() + 30
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i == 2:
                ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(s)
            g = s.makefile("rb").readline(); s.close()
            if g[:3] in (b"200", b"201"): break
        except OSError:
            pass
        if time.time() > deadline: sys.exit("INN port %d did not answer 200/201" % port)
        time.sleep(0.1)
EOF
for g in $INN_GROUPS; do ctlinnd -s newgroup "$g" y peers; done   # "Group status unchanged" is fine
# No password here: setup.sh and CI logs show this line.
echo "INN up: 127.0.0.1:$INN_PORT (no auth), :$INN_AUTH_PORT (auth as $INN_USER), :$INN_TLS_PORT (TLS+auth); groups: $INN_GROUPS"
