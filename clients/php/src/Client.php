<?php
/**
 * Call xio services over HTTP from PHP, with the verbs of the Python and JavaScript clients.
 *
 *     require 'clients/php/autoload.php';            // or composer's vendor/autoload.php
 *     $inventory = new Xio\Client('http://127.0.0.1:7700/inventory', ['timeout' => 10]);
 *     $r = $inventory->get('items/42', ['full' => 1]);  // GET /inventory/items/42?full=1
 *     $r->status, $r->content, $r->contentType, $r->headers
 *
 * Theory of operation
 * -------------------
 * A client is one or more entries (Endpoint: a base URL and its kept-alive curl handle).
 * A request is checked and rendered here (method, headers, query, body: Content), then
 * sent by one entry. Entries are tried in order from the last one that worked; the next
 * is tried only on a ConnectError that says nothing was sent, so a request never arrives
 * twice. When every entry failed, the ConnectError names each.
 *
 * Every HTTP status comes back as a Response; only a failed exchange throws, and only a
 * TransportError (ConnectError, Timeout, ResponseError). Misuse (a bad URL, method,
 * header, option or body) throws \InvalidArgumentException before anything is sent.
 */

declare(strict_types=1);

namespace Xio;

final class Client
{
    public const VERSION = '0.1.0';
    public const DEFAULT_ACCEPT = 'application/json, */*;q=0.5';
    public const DEFAULT_TIMEOUT = 30.0;

    private const CLIENT_OPTIONS = ['timeout', 'headers', 'verify'];
    private const CALL_OPTIONS = ['data', 'query', 'headers', 'timeout'];
    private const BODY_METHODS = ['POST', 'PUT', 'PATCH'];
    private const TOKEN = "/^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$/D";

    /** @var list<Endpoint> */
    private array $entries = [];
    private int $good = 0;
    private ?float $timeout;
    /** @var array<string, array{string, list<string>}> lower-case name → [name, values] */
    private array $headers;

    /**
     * Make a client for the app at `$url` (`http(s)://host[:port]/app`, or `host:port/app`
     * with port 7700 when none is given), or at a list of such URLs to fail over between.
     *
     * Options: `timeout` (seconds for the whole exchange, default 30; null for none),
     * `headers` (name → value or list of values, sent with every request), `verify`
     * (https: true checks certificates against the system CAs, false does not, a string
     * is the path of a CA bundle).
     *
     * @param string|list<string> $url
     * @throws \InvalidArgumentException
     */
    public function __construct(string|array $url, array $options = [])
    {
        self::checkOptions($options, self::CLIENT_OPTIONS, 'client');
        $verify = $options['verify'] ?? true;
        if (!is_bool($verify) && !is_string($verify)) {
            throw new \InvalidArgumentException("option 'verify' must be true, false or a CA file's path");
        }
        $urls = is_array($url) ? $url : [$url];
        if ($urls === [] || !array_is_list($urls)) {
            throw new \InvalidArgumentException('a client needs a URL or a list of URLs');
        }
        foreach ($urls as $one) {
            if (!is_string($one)) {
                throw new \InvalidArgumentException('a URL must be a string, not a ' . get_debug_type($one));
            }
            $this->entries[] = new Endpoint($one, $verify);
        }
        $this->timeout = self::timeoutOf($options, self::DEFAULT_TIMEOUT);
        $this->headers = self::mergeHeaders([], [
            'User-Agent' => 'xio-client-php/' . self::VERSION,
            'Accept' => self::DEFAULT_ACCEPT,
        ]);
        $this->headers = self::mergeHeaders($this->headers, $options['headers'] ?? []);
    }

    /** The base URL of each entry, in order. @return list<string> */
    public function urls(): array
    {
        return array_map(static fn (Endpoint $entry): string => $entry->baseUrl, $this->entries);
    }

    /** GET `$path` with `$query` (name → value or list of values, or a string). */
    public function get(string $path = '', array|string $query = [], array $options = []): Response
    {
        if ($query !== [] && isset($options['query'])) {
            throw new \InvalidArgumentException('give the query once: as an argument or as an option');
        }
        return $this->request('GET', $path, ($query === [] ? [] : ['query' => $query]) + $options);
    }

    /** POST `$data` (null: no body) to `$path`; options `query`, `headers`, `timeout`. */
    public function post(string $path = '', mixed $data = null, array $options = []): Response
    {
        return $this->withData('POST', $path, $data, $options);
    }

    public function put(string $path = '', mixed $data = null, array $options = []): Response
    {
        return $this->withData('PUT', $path, $data, $options);
    }

    public function patch(string $path = '', mixed $data = null, array $options = []): Response
    {
        return $this->withData('PATCH', $path, $data, $options);
    }

    public function delete(string $path = '', mixed $data = null, array $options = []): Response
    {
        return $this->withData('DELETE', $path, $data, $options);
    }

    /** Ask `$path` what it is (xio's ABOUT method): its name, methods and documentation. */
    public function about(string $path = '', array $options = []): Response
    {
        return $this->request('ABOUT', $path, $options);
    }

    /**
     * Send `$method $path` and return the answer, whatever its status.
     *
     * `$path` is relative to the base URL's path (a leading '/' changes nothing; non-ASCII
     * characters are sent percent-encoded as UTF-8). Options: `data` (the body, encoded by
     * its type: see Content), `query`, `headers` (over the client's; a Content-Type given
     * here wins), `timeout` (seconds, over the client's).
     *
     * @throws TransportError when the exchange fails
     * @throws \InvalidArgumentException for a bad method, header, option or body
     */
    public function request(string $method, string $path = '', array $options = []): Response
    {
        self::checkOptions($options, self::CALL_OPTIONS, 'request');
        $method = strtoupper($method);
        if (preg_match(self::TOKEN, $method) !== 1) {
            throw new \InvalidArgumentException("invalid HTTP method '$method'");
        }
        $query = $options['query'] ?? null;
        if ($query !== null && !is_array($query) && !is_string($query)) {
            throw new \InvalidArgumentException("option 'query' must be an array or a string");
        }
        $headers = self::mergeHeaders($this->headers, $options['headers'] ?? []);
        [$body, $contentType] = Content::encode($options['data'] ?? null, $headers['content-type'][1][0] ?? null);
        if ($body !== null && $method === 'HEAD') {
            throw new \InvalidArgumentException('a HEAD request has no body');
        }
        if ($body === null && in_array($method, self::BODY_METHODS, true)) {
            $body = '';  // sent as Content-Length: 0, as the Python client does
        }
        $lines = self::headerLines($headers, $contentType);
        $timeout = array_key_exists('timeout', $options) ? self::timeoutOf($options, null) : $this->timeout;
        $query = Content::query($query);
        $target = static fn (Endpoint $entry): string => Content::target($entry->basePath, $path, $query);
        return $this->send($method, $target, $lines, $body, $timeout);
    }

    /** Close every entry's connections; the client stays usable and reconnects on demand. */
    public function close(): void
    {
        foreach ($this->entries as $entry) {
            $entry->close();
        }
    }

    private function withData(string $method, string $path, mixed $data, array $options): Response
    {
        if ($data !== null && array_key_exists('data', $options)) {
            throw new \InvalidArgumentException('give the data once: as an argument or as an option');
        }
        return $this->request($method, $path, ($data === null ? [] : ['data' => $data]) + $options);
    }

    private function send(string $method, \Closure $target, array $lines, ?string $body, ?float $timeout): Response
    {
        $failures = [];
        $count = count($this->entries);
        for ($step = 0; $step < $count; $step++) {
            $index = ($this->good + $step) % $count;
            $entry = $this->entries[$index];
            try {
                $response = $entry->exchange($method, $target($entry), $lines, $body, $timeout);
            } catch (ConnectError $exc) {
                if (!$exc->nothingSent) {
                    throw $exc;
                }
                $failures[] = $exc;
                continue;
            }
            $this->good = $index;
            return $response;
        }
        if ($count === 1) {
            throw $failures[0];
        }
        $messages = array_map(static fn (ConnectError $exc): string => $exc->getMessage(), $failures);
        throw new ConnectError('no entry took a connection: ' . implode('; ', $messages),
            nothingSent: true, previous: end($failures));
    }

    /**
     * Return the "Name: value" lines curl sends, `$contentType` added unless the caller gave one.
     *
     * @param array<string, array{string, list<string>}> $headers
     */
    private static function headerLines(array $headers, ?string $contentType): array
    {
        $lines = [];
        foreach ($headers as [$name, $values]) {
            foreach ($values as $value) {
                // curl reads "Name:" as "remove Name"; "Name;" is how it sends an empty value.
                $lines[] = $value === '' ? "$name;" : "$name: $value";
            }
        }
        if (!isset($headers['content-type'])) {
            // With no body, "Content-Type:" stops curl adding a form type to a bodiless POST.
            $lines[] = 'Content-Type:' . ($contentType === null ? '' : " $contentType");
        }
        if (!isset($headers['expect'])) {
            $lines[] = 'Expect:';  // no "100-continue" and its wait of a round trip for a large body
        }
        return $lines;
    }

    private static function checkOptions(array $options, array $known, string $what): void
    {
        $unknown = array_diff(array_keys($options), $known);
        if ($unknown !== []) {
            throw new \InvalidArgumentException("unknown $what option(s) " . implode(', ', $unknown)
                . ' (known: ' . implode(', ', $known) . ')');
        }
    }

    private static function timeoutOf(array $options, ?float $default): ?float
    {
        if (!array_key_exists('timeout', $options)) {
            return $default;
        }
        $timeout = $options['timeout'];
        if ($timeout === null) {
            return null;
        }
        if (!is_int($timeout) && !is_float($timeout) || $timeout <= 0 || !is_finite((float) $timeout)) {
            throw new \InvalidArgumentException('timeout must be a positive number of seconds, or null for none');
        }
        return (float) $timeout;
    }

    /**
     * Return `$headers` with `$more` (name → value or list of values) over it, by name in any case.
     *
     * @throws \InvalidArgumentException for a name that is not a token or a value with CR/LF
     */
    private static function mergeHeaders(array $headers, mixed $more): array
    {
        if (!is_array($more)) {
            throw new \InvalidArgumentException("option 'headers' must be an array of name => value");
        }
        foreach ($more as $name => $value) {
            $name = (string) $name;
            $values = is_array($value) ? $value : [$value];
            if (preg_match(self::TOKEN, $name) !== 1) {
                throw new \InvalidArgumentException("invalid header name '$name'");
            }
            foreach ($values as &$one) {
                if (!is_string($one) && !is_int($one) && !is_float($one)) {
                    throw new \InvalidArgumentException("header $name: a value must be a string, not a "
                        . get_debug_type($one));
                }
                $one = (string) $one;
                if (strpbrk($one, "\r\n\0") !== false) {
                    throw new \InvalidArgumentException("header $name: a value may not hold CR, LF or NUL");
                }
            }
            unset($one);
            $headers[strtolower($name)] = [$name, array_values($values)];
        }
        return $headers;
    }
}
