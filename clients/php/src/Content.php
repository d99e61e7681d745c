<?php
/**
 * Turn PHP values into request bodies and query strings, and answers back into values (pure).
 *
 * Theory of operation
 * -------------------
 * The body's PHP type picks its Content-Type, as in the Python client (xio/content.py):
 * null sends no body; Xio\Bytes is application/octet-stream; a string is UTF-8 text
 * (text/plain; charset=utf-8); arrays, numbers, booleans and objects are JSON. A caller's
 * own Content-Type header wins, and structures are then still sent as JSON.
 *
 * An answer decodes by its Content-Type: a JSON type (application/json, *+json) becomes
 * PHP values with objects as associative arrays, so `{}` and `[]` both come back as `[]`;
 * text/* is a string (invalid UTF-8 replaced by U+FFFD, as Python's client does); anything
 * else is Xio\Bytes. None of this touches the network, so it is tested without one.
 *
 * @internal
 */

declare(strict_types=1);

namespace Xio;

final class Content
{
    public const JSON = 'application/json';
    public const TEXT = 'text/plain; charset=utf-8';
    public const BINARY = 'application/octet-stream';

    private const JSON_OUT = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES
        | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR;

    /**
     * Return [body, Content-Type] for `$data`; [null, null] when there is no body.
     *
     * @throws \InvalidArgumentException for a value that has no HTTP form
     */
    public static function encode(mixed $data, ?string $contentType): array
    {
        if ($data === null) {
            return [null, null];
        }
        if ($data instanceof Bytes) {
            return [$data->bytes, $contentType ?? self::BINARY];
        }
        if (is_string($data)) {
            if ($contentType === null && preg_match('//u', $data) !== 1) {
                throw new \InvalidArgumentException(
                    'a string body must be UTF-8 text; wrap binary data in Xio\Bytes'
                );
            }
            return [$data, $contentType ?? self::TEXT];
        }
        if (is_array($data) || is_int($data) || is_float($data) || is_bool($data)
            || $data instanceof \stdClass || $data instanceof \JsonSerializable) {
            try {
                return [json_encode($data, self::JSON_OUT), $contentType ?? self::JSON];
            } catch (\JsonException $exc) {
                throw new \InvalidArgumentException('the body is not JSON: ' . $exc->getMessage(), 0, $exc);
            }
        }
        throw new \InvalidArgumentException(
            'cannot send a ' . get_debug_type($data) . ' as a body '
            . '(use an array, a scalar, a string, Xio\Bytes, \stdClass or \JsonSerializable)'
        );
    }

    /**
     * Return the value of an answer's body, as Spec A of issue 12 (xio/content.py decode_answer).
     *
     * @throws ResponseError when a JSON body does not parse
     */
    public static function decode(string $body, ?string $contentType, string $method, int $status): mixed
    {
        $kind = self::mediaType($contentType);
        $json = $kind === self::JSON || str_ends_with($kind, '+json');
        if ($body === '') {
            if ($method === 'HEAD' || $status === 204 || $status === 304 || $json) {
                return null;
            }
            return str_starts_with($kind, 'text/') ? '' : new Bytes('');
        }
        if ($json) {
            try {
                return json_decode($body, true, 512, JSON_THROW_ON_ERROR);
            } catch (\JsonException $exc) {
                throw new ResponseError('malformed JSON body: ' . $exc->getMessage(), 0, $exc);
            }
        }
        if (str_starts_with($kind, 'text/')) {
            return self::utf8($body);
        }
        return new Bytes($body);
    }

    /** Return the bare, lower-case media type of a Content-Type value ("" for none). */
    public static function mediaType(?string $contentType): string
    {
        return strtolower(trim(explode(';', $contentType ?? '', 2)[0]));
    }

    /**
     * Return `$query` as a query string: name → value or list of values (a list repeats the
     * name), or a ready string (a leading '?' is dropped). Values are strings, numbers or
     * booleans ("true", "false").
     *
     * @throws \InvalidArgumentException for any other value
     */
    public static function query(array|string|null $query): string
    {
        if ($query === null) {
            return '';
        }
        if (is_string($query)) {
            return ltrim($query, '?');
        }
        $pairs = [];
        foreach ($query as $name => $value) {
            $values = is_array($value) && array_is_list($value) ? $value : [$value];
            foreach ($values as $one) {
                $pairs[] = rawurlencode((string) $name) . '=' . rawurlencode(self::queryValue($name, $one));
            }
        }
        return implode('&', $pairs);
    }

    /**
     * Return the request target for `$path` below `$basePath`: joined, with the query, and
     * every byte outside the characters a target may carry percent-encoded (a UTF-8 'é' is
     * %C3%A9). A '%' is left alone, so that an already encoded path passes unchanged.
     */
    public static function target(string $basePath, string $path, string $query): string
    {
        $path = ltrim($path, '/');
        $target = $path === '' ? ($basePath === '' ? '/' : $basePath) : "$basePath/$path";
        if ($query !== '') {
            $target .= (str_contains($target, '?') ? '&' : '?') . $query;
        }
        return preg_replace_callback(
            "~[^A-Za-z0-9/?&=:@!$'()*+,;%\\-._\\~]~",
            static fn (array $match): string => sprintf('%%%02X', ord($match[0])),
            $target,
        );
    }

    private static function queryValue(int|string $name, mixed $value): string
    {
        if (is_bool($value)) {
            return $value ? 'true' : 'false';
        }
        if (is_string($value) || is_int($value) || is_float($value) || $value instanceof \Stringable) {
            return (string) $value;
        }
        throw new \InvalidArgumentException(
            "query value of '$name' is a " . get_debug_type($value)
            . ' (use a string, a number, a boolean or a list of them)'
        );
    }

    /** Return `$text` with every invalid UTF-8 sequence replaced by U+FFFD (no mbstring needed). */
    private static function utf8(string $text): string
    {
        if (preg_match('//u', $text) === 1) {
            return $text;
        }
        return json_decode(json_encode($text, JSON_INVALID_UTF8_SUBSTITUTE | JSON_THROW_ON_ERROR));
    }
}
