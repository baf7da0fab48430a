<?php

/**
 * imapgate_origin: tell imapgate (or Dovecot) which browser is logging in.
 *
 * Before LOGIN, Roundcube sends IMAP ID ("x-originating-ip" ADDR
 * "x-originating-port" PORT) through the storage_connect hook's
 * preauth_ident (Roundcube 1.6 sends it only when the server's pre-login
 * CAPABILITY lists ID). imapgate, with this host in trusted_webmail, then
 * counts and bans the browser's address instead of the webmail host's.
 *
 * The address is REMOTE_ADDR, or, when REMOTE_ADDR is a reverse proxy the
 * admin listed in imapgate_origin_trusted_proxies, the right-most address of
 * X-Forwarded-For that is not such a proxy. Anything that is not a valid
 * IPv4/IPv6 address is never sent.
 *
 * License: same as imapgate.
 */
class imapgate_origin extends rcube_plugin
{
    private $proxies = null;

    public function init()
    {
        $this->add_hook('storage_connect', [$this, 'storage_connect']);
    }

    public function storage_connect($args)
    {
        list($ip, $port) = $this->origin();
        if ($ip === null) {
            return $args;
        }
        $ident = isset($args['preauth_ident']) && is_array($args['preauth_ident']) ? $args['preauth_ident'] : [];
        $ident['x-originating-ip'] = $ip;
        if ($port !== null) {
            $ident['x-originating-port'] = (string) $port;
        } else {
            unset($ident['x-originating-port']);
        }
        $args['preauth_ident'] = $ident;
        return $args;
    }

    /**
     * [ip, port] of the browser, [null, null] when unknown or not valid.
     * The port is the TCP peer's only when the address is the peer itself.
     */
    private function origin()
    {
        $peer = self::valid_ip(isset($_SERVER['REMOTE_ADDR']) ? $_SERVER['REMOTE_ADDR'] : '');
        if ($peer === null) {
            return [null, null];
        }
        if (!$this->trusted($peer)) {
            return [$peer, self::valid_port(isset($_SERVER['REMOTE_PORT']) ? $_SERVER['REMOTE_PORT'] : '')];
        }
        // From a trusted proxy: walk X-Forwarded-For from the right, past
        // every trusted proxy; the first other hop is the client.
        $xff = isset($_SERVER['HTTP_X_FORWARDED_FOR']) ? $_SERVER['HTTP_X_FORWARDED_FOR'] : '';
        $hops = array_reverse(array_map('trim', explode(',', $xff)));
        foreach ($hops as $hop) {
            $ip = self::valid_ip($hop);
            if ($ip === null) {
                // A hop we cannot read: send nothing rather than a
                // proxy's address (that would get the proxy banned).
                return [null, null];
            }
            if (!$this->trusted($ip)) {
                return [$ip, null];
            }
        }
        return [null, null]; // only proxies: no client known
    }

    private function trusted($ip)
    {
        if ($this->proxies === null) {
            $this->load_config();
            $list = rcmail::get_instance()->config->get('imapgate_origin_trusted_proxies', []);
            $this->proxies = [];
            foreach ((array) $list as $cidr) {
                $c = self::parse_cidr($cidr);
                if ($c === null) {
                    rcube::raise_error(['code' => 500, 'file' => __FILE__, 'line' => __LINE__,
                        'message' => "imapgate_origin: bad CIDR in imapgate_origin_trusted_proxies: $cidr"],
                        true, false);
                    continue;
                }
                $this->proxies[] = $c;
            }
        }
        $a = inet_pton($ip);
        foreach ($this->proxies as list($net, $bits)) {
            if (strlen($net) == strlen($a) && self::prefix_equal($net, $a, $bits)) {
                return true;
            }
        }
        return false;
    }

    /** "192.0.2.0/24", "2001:db8::/32" or a bare address into [bytes, bits]; null if bad. */
    private static function parse_cidr($cidr)
    {
        $parts = explode('/', trim((string) $cidr), 2);
        $ip = self::valid_ip($parts[0]);
        if ($ip === null) {
            return null;
        }
        $net = inet_pton($ip);
        $max = strlen($net) * 8;
        if (count($parts) == 1) {
            return [$net, $max];
        }
        if (!ctype_digit($parts[1]) || (int) $parts[1] > $max) {
            return null;
        }
        return [$net, (int) $parts[1]];
    }

    private static function prefix_equal($a, $b, $bits)
    {
        $whole = intdiv($bits, 8);
        if (substr($a, 0, $whole) !== substr($b, 0, $whole)) {
            return false;
        }
        $rest = $bits % 8;
        if ($rest == 0) {
            return true;
        }
        $mask = (0xff << (8 - $rest)) & 0xff;
        return (ord($a[$whole]) & $mask) == (ord($b[$whole]) & $mask);
    }

    /** A canonical IPv4/IPv6 address, or null. "[v6]" brackets are accepted. */
    private static function valid_ip($s)
    {
        $s = trim((string) $s);
        if (strlen($s) > 2 && $s[0] == '[' && substr($s, -1) == ']') {
            $s = substr($s, 1, -1);
        }
        if (filter_var($s, FILTER_VALIDATE_IP) === false) {
            return null;
        }
        // IPv4-mapped IPv6 is sent as IPv4, as imapgate counts it.
        $s = inet_ntop(inet_pton($s));
        if (stripos($s, '::ffff:') === 0 && filter_var(substr($s, 7), FILTER_VALIDATE_IP, FILTER_FLAG_IPV4)) {
            $s = substr($s, 7);
        }
        return $s;
    }

    private static function valid_port($s)
    {
        $s = (string) $s;
        return ctype_digit($s) && (int) $s > 0 && (int) $s < 65536 ? (int) $s : null;
    }
}
