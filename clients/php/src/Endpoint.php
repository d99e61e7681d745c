<?php
/**
 * One entry of a client: a base URL and the curl handle that talks to it.
 *
 * Theory of operation
 * -------------------
 * The handle is made once and `curl_reset` between requests: that clears the options but
 * keeps libcurl's cache of open connections, so requests to the same node reuse one
 * kept-alive connection (libcurl itself resends a request once when a reused connection
 * turns out to be closed before any answer, as browsers do).
 *
 * Response headers arrive line by line through CURLOPT_HEADERFUNCTION, which keeps repeats
 * (two Set-Cookie are two values) and starts over at each status line (a 100 Continue).
 *
 * A curl error is translated here, once, into the client's error tree. What matters for
 * failover is whether anything was sent: an error before the transfer began (no such
 * host, refused, a connect timeout, a TLS failure) is a ConnectError with $nothingSent,
 * which lets the next entry take the request; anything later never moves on.
 *
 * @internal
 */

declare(strict_types=1);

namespace Xio;

final class Endpoint
{
    // libcurl error numbers (stable across versions; not every PHP build defines each name).
    private const UNSUPPORTED_PROTOCOL = 1;  // also "Received HTTP/0.9": an answer that is not HTTP
    private const COULDNT_RESOLVE_PROXY = 5;
    private const COULDNT_RESOLVE_HOST = 6;
    private const COULDNT_CONNECT = 7;
    private const WEIRD_SERVER_REPLY = 8;
    private const PARTIAL_FILE = 18;
    private const OPERATION_TIMEDOUT = 28;
    private const BAD_CONTENT_ENCODING = 61;
    /** Errors that cannot happen once a connection is made: no byte of the request left. */
    private const NO_CONNECTION = [self::COULDNT_RESOLVE_PROXY, self::COULDNT_RESOLVE_HOST, self::COULDNT_CONNECT,
        35, 53, 54, 58, 59, 60, 64, 66, 77, 82, 83, 90, 91];  // TLS: handshake, certificates
    private const NOT_HTTP = [self::UNSUPPORTED_PROTOCOL, self::WEIRD_SERVER_REPLY, self::PARTIAL_FILE,
        self::BAD_CONTENT_ENCODING];

    public readonly string $baseUrl;
    private readonly string $origin;
    /** The base URL's path, without a trailing '/' ("" for none). */
    public readonly string $basePath;
    private ?\CurlHandle $handle = null;

    /** @throws \InvalidArgumentException for a URL that is not http(s)://host[:port][/path] or host:port[/path] */
    public function __construct(string $url, private readonly bool|string $verify = true)
    {
        $url = self::withScheme($url);
        $parts = parse_url($url) ?: [];
        $scheme = strtolower($parts['scheme'] ?? '');
        if (!in_array($scheme, ['http', 'https'], true) || ($parts['host'] ?? '') === ''
            || isset($parts['query']) || isset($parts['fragment']) || isset($parts['user'])) {
            throw new \InvalidArgumentException("not an http(s) base URL: '$url'"
                . (in_array($scheme, ['ws', 'wss'], true) ? ' (the PHP client speaks HTTP only)' : ''));
        }
        $port = isset($parts['port']) ? ':' . $parts['port'] : '';
        $this->origin = "$scheme://{$parts['host']}$port";
        $this->basePath = rtrim($parts['path'] ?? '', '/');
        $this->baseUrl = $this->origin . $this->basePath;
    }

    /**
     * Send one request and return its answer, whatever its status.
     *
     * @param list<string> $headers "Name: value" lines, checked by the caller
     * @throws TransportError
     */
    public function exchange(string $method, string $target, array $headers, ?string $body, ?float $timeout): Response
    {
        $url = $this->origin . $target;
        $handle = $this->handle ??= curl_init();
        curl_reset($handle);
        $received = ['status' => false, 'ended' => false, 'headers' => []];
        $options = [
            CURLOPT_URL => $url,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1,
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_PROXY => '',  // never a proxy from the environment: the node is the target
            CURLOPT_NOSIGNAL => true,  // timeouts under a second need it
            CURLOPT_TCP_NODELAY => true,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_HEADERFUNCTION => static function ($curl, string $line) use (&$received): int {
                self::headerLine($received, $line);
                return strlen($line);
            },
        ];
        if ($timeout !== null) {
            $milliseconds = max(1, (int) ceil($timeout * 1000));
            $options[CURLOPT_TIMEOUT_MS] = $milliseconds;
            $options[CURLOPT_CONNECTTIMEOUT_MS] = $milliseconds;
        }
        if ($method === 'HEAD') {
            $options[CURLOPT_NOBODY] = true;
        } elseif ($method !== 'GET' || $body !== null) {
            $options[CURLOPT_CUSTOMREQUEST] = $method;
        }
        if ($body !== null) {
            $options[CURLOPT_POSTFIELDS] = $body;
        }
        if (str_starts_with($this->origin, 'https:')) {
            $options[CURLOPT_SSL_VERIFYPEER] = $this->verify !== false;
            $options[CURLOPT_SSL_VERIFYHOST] = $this->verify !== false ? 2 : 0;
            if (is_string($this->verify)) {
                $options[CURLOPT_CAINFO] = $this->verify;
            }
        }
        curl_setopt_array($handle, $options);
        $raw = curl_exec($handle);
        $errno = curl_errno($handle);
        if ($errno !== 0 || !is_string($raw)) {
            throw $this->failure($handle, $errno, $method, $url, $received['status'], $timeout);
        }
        if (!$received['ended']) {  // libcurl takes a head ended by the connection's end as whole
            throw new ResponseError("$method $url: answer cut short in its headers");
        }
        $status = (int) curl_getinfo($handle, CURLINFO_RESPONSE_CODE);
        $contentType = $received['headers']['content-type'][0] ?? null;
        try {
            $content = Content::decode($raw, $contentType, $method, $status);
        } catch (ResponseError $exc) {
            throw new ResponseError("$method $url: " . $exc->getMessage(), 0, $exc);
        }
        return new Response($status, $content, $contentType, $received['headers']);
    }

    /** Close the connections this entry holds; the next request opens a new one. */
    public function close(): void
    {
        $this->handle = null;  // PHP closes a CurlHandle when its last reference goes
    }

    private static function headerLine(array &$received, string $line): void
    {
        $line = rtrim($line, "\r\n");
        if (str_starts_with($line, 'HTTP/')) {  // a new answer (after a 1xx): start over
            $received = ['status' => true, 'ended' => false, 'headers' => []];
            return;
        }
        if ($line === '') {
            $received['ended'] = true;  // the blank line that ends the head
            return;
        }
        $colon = strpos($line, ':');
        if ($colon === false || $colon === 0) {
            return;
        }
        $name = strtolower(substr($line, 0, $colon));
        $received['headers'][$name][] = trim(substr($line, $colon + 1), " \t");
    }

    private function failure(\CurlHandle $handle, int $errno, string $method, string $url,
                             bool $answered, ?float $timeout): TransportError
    {
        $why = curl_error($handle) ?: curl_strerror($errno);
        // The transfer phase begins once connected (and through TLS): before it, nothing left.
        $connected = (float) curl_getinfo($handle, CURLINFO_PRETRANSFER_TIME) > 0.0;
        if (in_array($errno, self::NO_CONNECTION, true)
            || ($errno === self::OPERATION_TIMEDOUT && !$connected)) {
            return new ConnectError("cannot connect to $url: $why", nothingSent: true);
        }
        if ($errno === self::OPERATION_TIMEDOUT) {
            return new Timeout("$method $url: no answer within $timeout s");
        }
        if (in_array($errno, self::NOT_HTTP, true) || $answered) {
            return new ResponseError("$method $url: " . ($answered ? 'answer cut short: ' : 'not an HTTP answer: ') . $why);
        }
        // GOT_NOTHING, a reset or any other error before the status line: the request may
        // have arrived, so this is never failed over.
        return new ConnectError("$method $url: connection lost before any response: $why");
    }

    /** Read `h:p/path` and `h/path` as --peers does: http://h:p/path, http://h:7700/path. */
    private static function withScheme(string $url): string
    {
        if (str_contains($url, '://')) {
            return $url;
        }
        [$address, $path] = array_pad(explode('/', $url, 2), 2, null);
        $afterBracket = substr($address, (int) strrpos($address, ']'));
        if (!str_contains($afterBracket, ':')) {
            $address .= ':7700';
        }
        return "http://$address" . ($path === null ? '' : "/$path");
    }
}
