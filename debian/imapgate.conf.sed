# imapgate.conf.example -> the packaged /etc/imapgate/imapgate.conf.
# Checked by tests/e2e/test_deb.py (imapgate -t on the installed file).
/^## As given, this file proxies/i\
## Debian package: imapgate runs as the system user imapgate (the systemd\
## unit starts it so; proc_username below for a start by root), keeps its\
## bans in /var/lib/imapgate/guard.db and its control socket and counters\
## in /run/imapgate. It listens on 1143, not 143: Dovecot has 143 on this\
## host. To replace imapproxy, see /usr/share/doc/imapgate/README.md.gz.\
##
s|^listen \[::1\]:1143$|#listen [::1]:1143|
s|^#proc_username imapgate$|proc_username imapgate|
s|^#proc_groupname imapgate$|proc_groupname imapgate|
s|^#stat_filename /run/imapgate/stats$|stat_filename /run/imapgate/stats|
s|^#control_socket /run/imapgate/ctl.sock$|control_socket /run/imapgate/ctl.sock|
s|^## 127.0.0.1:1143 and \[::1\]:1143\.$|## 127.0.0.1:1143.|
